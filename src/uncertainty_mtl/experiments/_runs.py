"""What every scene reproduction shares: presets, run directories, scheduling, seed summaries.

A run is a training config (a preset plus overrides) and a seed. Its directory,
``<out>/runs/<name>-<config hash>/seed<k>``, is found again by every command that asks for the
same config, so rows shared between commands (single-task models, the learned weightings) are
trained once; a finished run (``results.json``) is skipped and an interrupted one resumed from its
last checkpoint.

Choices (the approximately optimal weights, the units experiment's best weights) come from
*selection runs*: trained for half the steps and evaluated on the selection split only, never on
the reported one. On the synthetic city the selection split is val and the reported split test;
on Tiny Cityscapes, whose reported split is val (its test labels are not public), selection runs
train on ``train:fit`` and are scored on ``train:holdout``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from uncertainty_mtl._io import read_json
from uncertainty_mtl.config import TrainConfig, config_to_dict, load_config
from uncertainty_mtl.data.cityscapes import SCENE_TASKS
from uncertainty_mtl.reporting.tables import format_mean_std, summarise

__all__ = ["PRESETS", "Preset", "Reproduction", "Run", "errors_of", "mean_metrics"]


@dataclass(frozen=True)
class Preset:
    """A base config and what a reproduction changes in it.

    Attributes:
        base: shipped config name.
        overrides: ``--set`` overrides of every run.
        selection_steps: steps of a selection run.
        needs_data: the preset needs ``--data`` (no synthetic city).
        select_split / report_split: rows select checkpoints on the first, report the second.
        choose_train / choose_split: selection runs train on the first, are scored on the second.
    """

    base: str
    overrides: tuple[str, ...]
    selection_steps: int
    needs_data: bool = False
    select_split: str | None = "val"
    report_split: str = "test"
    choose_train: str = "train"
    choose_split: str = "val"


PRESETS: dict[str, Preset] = {
    # The small encoder on the synthetic city at 64×128: 1,200 steps a row (~95 s on 2 cores
    # with two runs side by side), selection runs 600.
    "cpu": Preset(
        "cpu/three-task",
        ("optim.steps=1200", "eval.every=600", "run.checkpoint_every=600", "data.workers=0"),
        selection_steps=600,
    ),
    # The paper's Tiny Cityscapes setting (Appendix A); needs --data and a GPU.
    "paper": Preset(
        "paper/tiny-cityscapes/three-task",
        (),
        selection_steps=25000,
        needs_data=True,
        select_split=None,
        report_split="val",
        choose_train="train:fit",
        choose_split="train:holdout",
    ),
    # Seconds, for the tests.
    "smoke": Preset(
        "smoke",
        ("optim.steps=4", "eval.every=2", "run.checkpoint_every=2", "eval.cluster_method=grid"),
        selection_steps=2,
    ),
}


@dataclass(frozen=True)
class Run:
    """A row's training: ``overrides`` on the preset, for one seed."""

    name: str
    overrides: tuple[str, ...]
    seed: int = 0
    selection: bool = False


def _fixed(weights: dict[str, float]) -> tuple[str, ...]:
    tasks = [t for t in SCENE_TASKS if weights.get(t, 0) > 0]
    spelled = ", ".join(f"{t}: {weights[t]}" for t in tasks)
    return (
        f"tasks=[{', '.join(tasks)}]",
        "weighting.kind=fixed",
        f"weighting.weights={{{spelled}}}",
    )


def _learned(tasks: Sequence[str], *extra: str) -> tuple[str, ...]:
    return (f"tasks=[{', '.join(tasks)}]", "weighting.kind=uncertainty", *extra)


def fixed_run(name: str, weights: dict[str, float], **kwargs: Any) -> Run:
    return Run(name, _fixed(weights), **kwargs)


def learned_run(name: str, tasks: Sequence[str], *extra: str, **kwargs: Any) -> Run:
    return Run(name, _learned(tasks, *extra), **kwargs)


def _train_job(config: dict[str, Any], run_dir: str, resume: bool, threads: int) -> dict[str, Any]:
    from uncertainty_mtl.engine import train

    torch.set_num_threads(threads)
    return train(load_config(data=config), run_dir, resume=resume, progress=False)


@dataclass
class Reproduction:
    """Trains and finds runs for one reproduction command.

    Args:
        preset: a key of :data:`PRESETS`.
        out: the directory of the command's outputs and of ``runs/``.
        data: a Cityscapes-layout root; default: the preset's (the synthetic city, generated on
            first use).
        workers: runs trained side by side (one thread each when more than one).
    """

    preset: str
    out: Path
    data: str | None = None
    workers: int = 1
    progress: bool = True
    extra: tuple[str, ...] = ()
    _started: float = field(default_factory=time.perf_counter)
    _used: set[Run] = field(default_factory=set)
    _trained: set[Run] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {list(PRESETS)}, got {self.preset!r}")
        if PRESETS[self.preset].needs_data and not self.data:
            raise ValueError(f"--preset {self.preset} needs --data ROOT (e.g. Tiny Cityscapes)")
        self.out = Path(self.out)

    @property
    def spec(self) -> Preset:
        return PRESETS[self.preset]

    def config(self, run: Run) -> TrainConfig:
        spec = self.spec
        overrides = [*spec.overrides, *self.extra, *run.overrides, f"run.seed={run.seed}"]
        if self.data:
            overrides += [f"data.root={self.data}", "data.synthetic=false"]
        if run.selection:
            overrides += [
                f"optim.steps={spec.selection_steps}",
                f"data.train_split={spec.choose_train}",
                f"eval.select_split={spec.choose_split}",
                f"eval.report_split={spec.choose_split}",
                "eval.cluster_method=null",
            ]
        else:
            overrides += [
                f"eval.report_split={spec.report_split}",
                f"eval.select_split={spec.select_split or 'null'}",
            ]
        if self.workers > 1:
            overrides += ["run.threads=1", "data.workers=0"]
        return load_config(spec.base, overrides)

    def run_dir(self, run: Run) -> Path:
        settings = config_to_dict(self.config(run))
        # How a run is executed is not what it is; seeds share a directory (seed<k> below it).
        for volatile in ("threads", "device", "seed"):
            settings["run"].pop(volatile, None)
        settings["data"].pop("workers", None)
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        return self.out / "runs" / f"{run.name}-{digest}" / f"seed{run.seed}"

    def prepare(self) -> None:
        """Generates the synthetic city and its cache before runs start side by side."""
        from uncertainty_mtl.engine import _ensure_data, _frames, _Process

        config = self.config(Run("prepare", ()))
        _ensure_data(config, _Process(0, 1, torch.device("cpu")))
        splits = {config.data.train_split, self.spec.report_split, self.spec.choose_split,
                  self.spec.choose_train}  # fmt: skip
        for split in sorted(s for s in splits if s):
            _frames(config, split, train=False)  # builds the cache once

    def results(self, runs: Iterable[Run]) -> dict[Run, dict[str, Any]]:
        """The results of ``runs``, training those not finished (resuming interrupted ones),
        ``workers`` at a time."""
        done: dict[Run, dict[str, Any]] = {}
        todo = []
        for run in dict.fromkeys(runs):
            self._used.add(run)
            path = self.run_dir(run) / "results.json"
            if path.is_file():
                done[run] = read_json(path)
            else:
                todo.append(run)
        if not todo:
            return done
        self.prepare()
        threads = 1 if self.workers > 1 else (os.cpu_count() or 1)
        bar = tqdm(total=len(todo), desc=f"{self.out.name} runs", unit="run",
                   disable=not self.progress)  # fmt: skip
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn")) as pool:
            futures = {}
            for run in todo:
                run_dir = self.run_dir(run)
                resume = (run_dir / "checkpoints" / "last.pt").is_file()
                config = config_to_dict(self.config(run))
                futures[pool.submit(_train_job, config, str(run_dir), resume, threads)] = run
            for future in as_completed(futures):
                run = futures[future]
                done[run] = future.result()
                self._trained.add(run)
                bar.set_postfix_str(f"{run.name} seed {run.seed}")
                bar.update()
        bar.close()
        return done

    def timing(self) -> dict[str, Any]:
        """This invocation's wall time, and how many of the runs it used it trained (the others
        were found finished on disk)."""
        return {"wall_time_s": time.perf_counter() - self._started,
                "runs_trained": len(self._trained), "runs_used": len(self._used)}  # fmt: skip


def errors_of(metrics: dict[str, Any], tasks: Sequence[str]) -> dict[str, float]:
    """Per-task errors, lower is better: 100 − mIoU, instance error, depth error."""
    keys = {"instance": "instance_mean_error_px", "depth": "depth_mean_error_px"}
    return {t: 100.0 - metrics["miou"] if t == "semantic" else metrics[keys[t]] for t in tasks}


def choose(
    candidates: dict[Any, dict[str, Any]], tasks: Sequence[str]
) -> tuple[Any, dict[Any, float]]:
    """The candidate with the lowest mean over tasks of its min-max normalised error (errors of
    the selection split, averaged over seeds); and every candidate's score."""
    keys = list(candidates)
    normalised = []
    for task in tasks:
        values = np.array([errors_of(candidates[k], tasks)[task] for k in keys])
        span = values.max() - values.min()
        normalised.append((values - values.min()) / span if span > 0 else np.zeros(len(keys)))
    scores = np.mean(normalised, axis=0)
    return keys[int(np.argmin(scores))], dict(zip(keys, scores.tolist(), strict=True))


SELECTION_CRITERION = (
    "each task's error on the selection split (100 − mIoU, instance error, depth error) is min-max "
    "normalised over the candidates; the candidate with the lowest mean of them is chosen"
)

#: Scalar metrics summarised over seeds.
METRIC_KEYS = ("miou", "pixel_accuracy", "instance_mean_error_px", "instance_ap", "instance_ap50",
               "depth_mean_error_px", "depth_rms_error_px")  # fmt: skip


def mean_metrics(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Seed summaries (mean, std, n, values) of the scalar metrics the runs have."""
    out = {}
    for key in METRIC_KEYS:
        values = [r["metrics"][key] for r in results if key in r["metrics"]]
        if values and all(isinstance(v, float | int) and v == v for v in values):
            out[key] = summarise(values)
    return out


def cell(summary: dict[str, Any], key: str, digits: int) -> str:
    return format_mean_std(summary.get(key), digits)


def trivial_baselines(reproduction: Reproduction) -> dict[str, float]:
    """Metrics on the report split of predictors built from training-split statistics only: the
    most frequent class per pixel position, zero offsets, the mean disparity per image row."""
    import torch.nn.functional as F

    from uncertainty_mtl.data.cityscapes import CityscapesScenes
    from uncertainty_mtl.metrics import SceneMetrics

    config = reproduction.config(Run("trivial", ()))
    d = config.data
    train = CityscapesScenes(d.root, d.train_split, cache_dir=d.cache_dir, check_values=False)
    test = CityscapesScenes(d.root, reproduction.spec.report_split, cache_dir=d.cache_dir,
                            check_values=False)  # fmt: skip
    h, w = train[0][0].shape[-2:]
    counts = torch.zeros(19, h, w)
    depth_sum, depth_n = torch.zeros(h), torch.zeros(h)
    for i in range(0, len(train), max(1, len(train) // 500)):
        _, t = train[i]
        valid = t["semantic"] != 255
        counts.scatter_add_(0, t["semantic"].clamp(max=18)[None], valid[None].float())
        depth_sum += (t["inverse_depth"] * t["depth_mask"]).sum(1)
        depth_n += t["depth_mask"].sum(1)
    prior = F.one_hot(counts.argmax(0), 19).permute(2, 0, 1)[None].float()
    rows = (depth_sum / depth_n.clamp(min=1)).view(1, 1, h, 1).expand(1, 1, h, w)
    metrics = SceneMetrics(["semantic", "instance", "depth"])
    for i in range(len(test)):
        _, t = test[i]
        if t["semantic"].shape != (h, w):
            raise ValueError("trivial baselines need one frame size for train and test")
        metrics.update({"semantic": prior, "instance": torch.zeros(1, 2, h, w), "depth": rows},
                       {k: v[None] for k, v in t.items()})  # fmt: skip
    result = metrics.compute()
    return {k: result[k] for k in ("miou", "instance_mean_error_px", "depth_mean_error_px")}
