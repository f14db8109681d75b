"""Finished run directories: the network back, its evaluation on any split, predictions."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from uncertainty_mtl._io import read_json, write_json
from uncertainty_mtl.config import TrainConfig
from uncertainty_mtl.engine.builders import build_model
from uncertainty_mtl.engine.checkpoint import load_checkpoint
from uncertainty_mtl.engine.distributed import check_device, setup_process
from uncertainty_mtl.engine.evaluate import final_evaluation
from uncertainty_mtl.engine.rundir import read_run_config
from uncertainty_mtl.errors import DataError, RunDirectoryError
from uncertainty_mtl.inference.predict import Predictor
from uncertainty_mtl.models.multitask import MultiTaskNet

__all__ = ["evaluate_checkpoint", "evaluate_run", "load_run", "predictor"]


def load_run(
    run_dir: str | os.PathLike[str], *, checkpoint: str = "auto", device: str | None = None
) -> tuple[MultiTaskNet, TrainConfig, dict[str, Any]]:
    """A run's network (in eval mode), its config and the checkpoint's state.

    Args:
        run_dir: a run directory of :func:`~uncertainty_mtl.engine.train`.
        checkpoint: ``"best"``, ``"last"``, or ``"auto"`` (best if there is one).
        device: default: the run's ``run.device``.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if checkpoint == "auto":
        checkpoint = "best" if (run_dir / "checkpoints" / "best.pt").is_file() else "last"
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise RunDirectoryError(f"{path}: no such checkpoint")
    device = device or config.run.device
    check_device(device)
    state = load_checkpoint(path, device)
    state["checkpoint"] = checkpoint
    model = build_model(config).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), config, state


def predictor(
    run_dir: str | os.PathLike[str],
    *,
    checkpoint: str = "auto",
    device: str = "cpu",
    cluster_method: str = "grid",
) -> Predictor:
    """A :class:`~uncertainty_mtl.inference.predict.Predictor` of a run's checkpoint."""
    model, config, state = load_run(run_dir, checkpoint=checkpoint, device=device)
    return Predictor(
        model,
        input_size=state.get("input_size"),
        depth_scale=config.data.depth_scale,
        device=device,
        cluster_method=cluster_method,
    )


def evaluate_checkpoint(
    run_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    checkpoint: str = "auto",
    data_root: str | os.PathLike[str] | None = None,
    cluster_method: str | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluates a run's checkpoint on a split; writes nothing (see :func:`evaluate_run`).

    Args:
        run_dir: a run directory of :func:`~uncertainty_mtl.engine.train`.
        split: default: the config's report split.
        checkpoint: ``"best"``, ``"last"``, or ``"auto"`` (best if there is one).
        data_root: evaluate on another Cityscapes-layout root, e.g. full-resolution Cityscapes
            for a network trained on Tiny Cityscapes: its input is resized to the training size
            and its outputs upsampled to the ground truth's.
        cluster_method: instance clustering for AP (default: the config's).
        device: torch device (default: the run's ``run.device``).
    """
    results, _ = _evaluate(run_dir, split, checkpoint, data_root, cluster_method, progress, device)
    return results


def _evaluate(
    run_dir: str | os.PathLike[str],
    split: str | None,
    checkpoint: str,
    data_root: str | os.PathLike[str] | None,
    cluster_method: str | None,
    progress: bool,
    device: str | None = None,
) -> tuple[dict[str, Any], str]:
    """:func:`evaluate_checkpoint`'s results, and the run's own report split."""
    model, config, state = load_run(run_dir, checkpoint=checkpoint, device=device)
    config.run.device = device or config.run.device
    report_split = config.eval.report_split
    if data_root is not None:
        # Another root: nothing to generate, and its frames must not replace the run's cache.
        config.data.root, config.data.synthetic, config.data.cache_dir = str(data_root), False, None
    elif not Path(config.data.root).is_dir():
        # A relative root is the run's working directory's; from elsewhere it is not found.
        raise DataError(
            f"{config.data.root}: the run's data root ({run_dir}/config.yaml) is not a directory "
            f"here (relative roots are read from the current directory, {Path.cwd()}); pass "
            "--data ROOT (data_root=) to evaluate on it from here"
        )
    proc = setup_process(config.run.device)
    results = final_evaluation(
        config,
        model,
        proc,
        kept=state["checkpoint"],
        step=state["step"],
        input_size=state.get("input_size"),
        split=split or report_split,
        cluster_method=cluster_method,
        progress=progress,
    )
    if data_root is not None:
        results["data_root"] = str(data_root)
    return results, report_split


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    checkpoint: str = "auto",
    data_root: str | os.PathLike[str] | None = None,
    cluster_method: str | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """``umtl evaluate``: :func:`evaluate_checkpoint`, written into the run directory.

    The report split of the run's own data goes to ``results.json`` (keeping its ``training``
    record); anything else to ``results-<split>[-<root name>].json``.
    """
    run_dir = Path(run_dir)
    results, report_split = _evaluate(
        run_dir, split, checkpoint, data_root, cluster_method, progress, device
    )
    if data_root is None and results["split"] == report_split:
        name = "results.json"
    else:
        name = f"results-{results['split']}" + (f"-{Path(data_root).name}" if data_root else "")
        name += ".json"
    if int(os.environ.get("RANK", "0")) == 0:
        previous = run_dir / name
        if previous.is_file():
            # A damaged results.json has no training record to keep; it is rewritten whole.
            with contextlib.suppress(OSError, ValueError, AttributeError):
                results["training"] = read_json(previous).get("training")
        write_json(run_dir / name, results)
    return results
