"""The two-task study of the reproduction report (Key 2019, §3): classification + reconstruction.

One small convolutional auto-encoder with a classification head learns to classify images
(cross-entropy, softmax likelihood) and to reconstruct them (L1, Laplace likelihood). Rows, as in
the report's Table 1, plus our ablation:

* classification only, reconstruction only (one-hot fixed weights);
* unweighted sum (0.5, 0.5);
* approximately optimal fixed weights: the best point of a weight grid, chosen on the validation
  split (see :data:`SELECTION_CRITERION`);
* learned weights, likelihood convention (softmax term for cross-entropy, Laplace term for L1);
* learned weights, paper convention (Gaussian term for the L1 loss too): the report's
  "incorrect coefficients" (its eq. 32), kept as an ablation.

Every fixed-weight point of the grid is trained for every seed (the grid's ends are the single-task
rows, its middle the unweighted row). The test split is evaluated for the reported numbers and the
curves only; no choice looks at it. Finished runs are found on disk and skipped, so an interrupted
study resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from uncertainty_mtl._io import read_json, write_json, write_text
from uncertainty_mtl.data.mnist_like import (
    ImageSplits,
    load_digits_splits,
    load_fashion_mnist_splits,
)
from uncertainty_mtl.models.autoencoder import ConvAutoencoderClassifier
from uncertainty_mtl.reporting.plots import ema, mean_band, new_figure, save_figure
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise
from uncertainty_mtl.tasks import classification, reconstruction
from uncertainty_mtl.weighting import (
    FixedWeighting,
    UncertaintyWeighting,
    Weighting,
    parameter_groups,
)
from uncertainty_mtl.weighting.uncertainty import optimal_log_variance

__all__ = [
    "PRESETS",
    "REFERENCE",
    "SELECTION_CRITERION",
    "StudyConfig",
    "run_study",
    "smoke_config",
]

TASKS = ("classification", "reconstruction")
LIKELIHOODS = {
    "classification": classification.LIKELIHOOD,
    "reconstruction": reconstruction.LIKELIHOOD,
}
#: metric per task, and whether higher is better.
METRICS = {"classification": ("accuracy", True), "reconstruction": ("reconstruction_l1", False)}

SELECTION_CRITERION = (
    "Among the grid's multi-task points (0 < w < 1), each task's mean validation metric over seeds "
    "(classification error = 100 - accuracy, reconstruction L1) is min-max normalised across "
    "those points; the point with the lowest mean of the two normalised values is chosen."
)

#: Key (2019), Table 1: Fashion-MNIST, test split. The report's "learned" row used the Gaussian
#: term for its L1 loss (its eq. 32), i.e. our paper-convention row.
REFERENCE: dict[str, dict[str, float]] = {
    "classification_only": {"accuracy": 89.7},
    "reconstruction_only": {"reconstruction_l1": 0.0873},
    "unweighted": {"accuracy": 89.3, "reconstruction_l1": 0.0847},
    "approx_optimal": {"accuracy": 90.0, "reconstruction_l1": 0.0785},
    "learned_paper": {"accuracy": 90.2, "reconstruction_l1": 0.0749},
}
REFERENCE_APPROX_OPTIMAL = {"classification": 0.4, "reconstruction": 0.6}


@dataclass(frozen=True)
class StudyConfig:
    """Everything that decides the study's numbers (the resolved copy is saved as config.yaml).

    Attributes:
        dataset: ``"digits"`` (scikit-learn's, no download) or ``"fashion-mnist"`` (IDX files).
        data_dir: directory of the Fashion-MNIST IDX files.
        seeds: seeds 0..seeds-1; each seed fixes initialisation and batch order of every row.
        epochs: passes over the training split.
        batch_size: images per step.
        lr: Adam learning rate of the network and of the log-variances.
        weighting_lr: Adam learning rate of the log-variances, if different from ``lr``.
        init_log_var: initial ``s`` of both tasks for the learned rows.
        grid: classification weights ``w`` of the fixed-weight sweep (reconstruction ``1 - w``);
            0, 0.5 and 1 are always added (single tasks and the unweighted row).
        eval_every: steps between evaluations of val and test (for the curves).
        log_every: steps between records in each run's metrics.jsonl.
        max_train: use only the first images of the training split (smoke runs).
        max_eval: use only the first images of val and test (smoke runs).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    seeds: int = 3
    epochs: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    weighting_lr: float | None = None
    init_log_var: float = 0.0
    grid: tuple[float, ...] = tuple(round(0.1 * i, 2) for i in range(11))
    eval_every: int = 90
    log_every: int = 10
    max_train: int | None = None
    max_eval: int | None = None

    def __post_init__(self) -> None:
        if self.dataset not in ("digits", "fashion-mnist"):
            raise ValueError(f"dataset must be 'digits' or 'fashion-mnist', got {self.dataset!r}")
        for name in ("seeds", "epochs", "batch_size", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not all(0.0 <= w <= 1.0 for w in self.grid):
            raise ValueError(f"grid weights must lie in [0, 1], got {list(self.grid)}")
        if not self.lr > 0 or (self.weighting_lr is not None and not self.weighting_lr > 0):
            raise ValueError("learning rates must be > 0")

    @property
    def fixed_weights(self) -> tuple[float, ...]:
        return tuple(sorted({round(w, 6) for w in (*self.grid, 0.0, 0.5, 1.0)}))


PRESETS: dict[str, StudyConfig] = {
    # 1,149 training images of 8×8: 18 steps an epoch, 1,800 steps a run. lr 3e-3 was chosen
    # over 1e-3 on the validation split with the single-task models (see the README).
    "digits": StudyConfig(),
    # The report's optimiser (Adam, 1e-4) on 50,000 training images: 782 steps an epoch.
    "fashion-mnist": StudyConfig(
        dataset="fashion-mnist", epochs=30, lr=1e-4, eval_every=1000, log_every=50
    ),
}


def smoke_config(config: StudyConfig) -> StudyConfig:
    """A few-second version of ``config`` for tests: tiny splits, two epochs, a 3-point grid."""
    return replace(
        config,
        epochs=2,
        batch_size=16,
        grid=(0.0, 0.5, 1.0),
        eval_every=3,
        log_every=2,
        max_train=64,
        max_eval=32,
    )


@dataclass(frozen=True)
class RunSpec:
    """One row-seed's weighting: fixed with classification weight ``w``, or learned."""

    run_id: str
    class_weight: float | None = None
    convention: str | None = None

    @staticmethod
    def fixed(w: float) -> RunSpec:
        return RunSpec(f"fixed-{w:.2f}", class_weight=w)

    @staticmethod
    def learned(convention: str) -> RunSpec:
        return RunSpec(f"learned-{convention}", convention=convention)

    @property
    def weights(self) -> dict[str, float] | None:
        if self.class_weight is None:
            return None
        return {"classification": self.class_weight, "reconstruction": 1.0 - self.class_weight}

    @property
    def tasks(self) -> tuple[str, ...]:
        weights = self.weights
        return TASKS if weights is None else tuple(t for t in TASKS if weights[t] > 0)

    def make_weighting(self, config: StudyConfig) -> Weighting:
        if self.weights is not None:
            return FixedWeighting(self.weights)
        assert self.convention is not None
        return UncertaintyWeighting(
            LIKELIHOODS, init_log_var=config.init_log_var, convention=self.convention
        )


def load_splits(config: StudyConfig) -> ImageSplits:
    """The configured data set's train/val/test splits (errors name the bad file)."""
    if config.dataset == "digits":
        splits = load_digits_splits()
    elif config.data_dir is None:
        raise ValueError(
            "dataset 'fashion-mnist' needs data_dir (--data-dir): the directory holding "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (each may be .gz)"
        )
    else:
        splits = load_fashion_mnist_splits(config.data_dir)
    if config.max_train is not None or config.max_eval is not None:
        splits = splits.subset(config.max_train or len(splits.train[1]), config.max_eval or 10**9)
    return splits


@torch.no_grad()
def evaluate(
    model: ConvAutoencoderClassifier,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Metrics of the model's heads over a whole split.

    Returns:
        ``accuracy`` (% correct) and/or ``reconstruction_l1`` (mean absolute pixel error, pixels in
        [0, 1]), for the heads the model has.
    """
    was_training = model.training
    model.eval()
    correct, abs_error, n = 0, 0.0, len(labels)
    for start in range(0, n, batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        out = model(x)
        if "classification" in out:
            correct += classification.correct_count(out["classification"], y)
        if "reconstruction" in out:
            abs_error += float((out["reconstruction"] - x).abs().sum())
    model.train(was_training)
    metrics = {}
    if "classification" in model.tasks:
        metrics["accuracy"] = 100.0 * correct / n
    if "reconstruction" in model.tasks:
        metrics["reconstruction_l1"] = abs_error / images[0].numel() / n
    return metrics


def task_losses(outputs: dict[str, Tensor], images: Tensor, labels: Tensor) -> dict[str, Tensor]:
    losses = {}
    if "classification" in outputs:
        losses["classification"] = classification.classification_loss(
            outputs["classification"], labels
        )
    if "reconstruction" in outputs:
        losses["reconstruction"] = reconstruction.reconstruction_loss(
            outputs["reconstruction"], images
        )
    return losses


def _fingerprint(config: StudyConfig, spec: RunSpec, seed: int) -> str:
    relevant = {k: v for k, v in asdict(config).items() if k not in ("seeds", "grid", "data_dir")}
    payload = json.dumps({"config": relevant, "spec": asdict(spec), "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_run(
    spec: RunSpec,
    seed: int,
    config: StudyConfig,
    splits: ImageSplits,
    run_dir: Path,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Trains one row for one seed and writes ``metrics.jsonl`` and ``result.json`` in
    ``run_dir``; returns the result."""
    start = time.perf_counter()
    device = torch.device(device)
    x_train, y_train = (torch.from_numpy(a).to(device) for a in splits.train)
    evals = {
        split: tuple(torch.from_numpy(a).to(device) for a in getattr(splits, split))
        for split in ("val", "test")
    }
    torch.manual_seed(seed)
    model = ConvAutoencoderClassifier(
        splits.image_size,
        tasks=spec.tasks,
        num_classes=splits.num_classes,
        mean=float(x_train.mean()),
        std=float(x_train.std()),
    ).to(device)
    weighting = spec.make_weighting(config).to(device)
    optimiser = torch.optim.Adam(
        parameter_groups(
            model, weighting, lr=config.lr, weight_decay=0.0, weighting_lr=config.weighting_lr
        )
    )
    order = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch

    def evaluation(step: int) -> dict[str, Any]:
        row: dict[str, Any] = {"step": step}
        for split, (x, y) in evals.items():
            row.update({f"{split}/{k}": v for k, v in evaluate(model, x, y).items()})
        return row

    run_dir.mkdir(parents=True, exist_ok=True)
    records: list[str] = []
    history = [evaluation(0)]
    step = 0
    bar = tqdm(
        total=total_steps, desc=f"{spec.run_id} seed {seed}", leave=False, disable=not progress
    )
    for epoch in range(config.epochs):
        for index in torch.split(torch.randperm(len(y_train), generator=order), config.batch_size):
            x, y = x_train[index], y_train[index]
            losses = task_losses(model(x), x, y)
            total = weighting(losses)
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            step += 1
            if step % config.log_every == 0:
                record = {
                    "step": step,
                    "epoch": epoch,
                    **{f"loss/{t}": float(v.detach()) for t, v in losses.items()},
                    "loss/total": float(total.detach()),
                    **weighting.log_dict(),
                    "lr": optimiser.param_groups[0]["lr"],
                }
                records.append(json.dumps(record))
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.startswith("loss/")})
            if step % config.eval_every == 0 or step == total_steps:
                history.append(evaluation(step))
            bar.update()
    bar.close()
    write_text(run_dir / "metrics.jsonl", "\n".join(records) + "\n")
    result = {
        "run_id": spec.run_id,
        "seed": seed,
        "fingerprint": _fingerprint(config, spec, seed),
        "tasks": list(spec.tasks),
        "weights": spec.weights,
        "convention": spec.convention,
        "steps": total_steps,
        "final": {"val": evaluate(model, *evals["val"]), "test": evaluate(model, *evals["test"])},
        "log_variances": weighting.log_variances(),
        "effective_weights": weighting.effective_weights(),
        "history": history,
        "wall_time_s": time.perf_counter() - start,
    }
    write_json(run_dir / "result.json", result)
    return result


def _cached_result(run_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    try:
        result: dict[str, Any] = read_json(path)
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("fingerprint") == fingerprint else None


# Worker-process state: the splits, loaded once per process by the initializer.
_WORKER_SPLITS: ImageSplits | None = None


def _init_worker(config: StudyConfig, threads: int) -> None:
    global _WORKER_SPLITS
    torch.set_num_threads(threads)
    _WORKER_SPLITS = load_splits(config)


def _worker_run(
    spec: RunSpec, seed: int, config: StudyConfig, run_dir: Path, device: str
) -> dict[str, Any]:
    assert _WORKER_SPLITS is not None
    return train_run(spec, seed, config, _WORKER_SPLITS, run_dir, device=device)


def _execute(
    jobs: list[tuple[RunSpec, int, Path]],
    config: StudyConfig,
    splits: ImageSplits,
    *,
    workers: int,
    device: str,
    progress: bool,
) -> Iterable[tuple[RunSpec, int, dict[str, Any]]]:
    """Runs the jobs, in-process or on ``workers`` processes of ``cpu_count // workers``
    threads each (many small runs use two cores better side by side than one after another)."""
    bar = tqdm(total=len(jobs), desc="two-task study", unit="run", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        for spec, seed, run_dir in jobs:
            yield (
                spec,
                seed,
                train_run(spec, seed, config, splits, run_dir, device=device, progress=progress),
            )
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(config, threads),
        ) as pool:
            futures = {
                pool.submit(_worker_run, spec, seed, config, run_dir, device): (spec, seed)
                for spec, seed, run_dir in jobs
            }
            for future in as_completed(futures):
                spec, seed = futures[future]
                bar.set_postfix_str(f"{spec.run_id} seed {seed}")
                bar.update()
                yield spec, seed, future.result()
    bar.close()


def run_study(
    config: StudyConfig,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Trains every row for every seed (skipping finished runs) and writes the study's outputs.

    Writes into ``out``: ``config.yaml``, ``results.json``, ``table.md``,
    ``fig_log_variances.png``, ``fig_grid_search.png``, ``fig_test_curves.png`` and one directory
    per run under ``runs/<run_id>/seed<k>/``.

    Returns:
        The content of ``results.json``.
    """
    start = time.perf_counter()
    out = Path(out)
    splits = load_splits(config)  # bad data fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(_config_dict(config), sort_keys=False))

    specs = [RunSpec.fixed(w) for w in config.fixed_weights]
    specs += [RunSpec.learned("likelihood"), RunSpec.learned("paper")]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    jobs = []
    for seed in range(config.seeds):
        for spec in specs:
            run_dir = out / "runs" / spec.run_id / f"seed{seed}"
            cached = _cached_result(run_dir, _fingerprint(config, spec, seed))
            if cached is not None:
                results[spec.run_id, seed] = cached
            else:
                jobs.append((spec, seed, run_dir))
    if progress and results:
        tqdm.write(f"{len(results)} finished run(s) found in {out / 'runs'}; skipping them")
    for spec, seed, result in _execute(
        jobs, config, splits, workers=workers, device=device, progress=progress
    ):
        results[spec.run_id, seed] = result

    summary = _summarise(config, splits, specs, results)
    summary["wall_time_s"] = time.perf_counter() - start
    summary["trained_runs"] = len(jobs)
    write_json(out / "results.json", summary)
    write_text(out / "table.md", _table(summary))
    _plot_log_variances(out, config, results)
    _plot_grid(out / "fig_grid_search.png", summary)
    _plot_test_curves(out / "fig_test_curves.png", config, summary, results)
    return summary


def _config_dict(config: StudyConfig) -> dict[str, Any]:
    d = asdict(config)
    d["grid"] = list(config.grid)
    return d


def _metric_summaries(
    results: dict[tuple[str, int], dict[str, Any]], run_id: str, seeds: int, split: str
) -> dict[str, Any]:
    finals = [results[run_id, s]["final"][split] for s in range(seeds)]
    return {m: summarise([f[m] for f in finals]) for m in finals[0]}


def select_weight(grid: list[dict[str, Any]]) -> tuple[float | None, dict[str, float]]:
    """Applies :data:`SELECTION_CRITERION` to the grid's validation results.

    Returns:
        The chosen classification weight (``None`` when the grid has no multi-task point) and
        the score of every multi-task point.
    """
    points = [g for g in grid if 0 < g["weights"]["classification"] < 1]
    if not points:
        return None, {}
    normalised = []
    for metric, higher_better in METRICS.values():
        values = np.array([g["val"][metric]["mean"] for g in points])
        if higher_better:
            values = -values
        span = values.max() - values.min()
        normalised.append((values - values.min()) / span if span > 0 else np.zeros_like(values))
    scores = np.mean(normalised, axis=0)
    weights = [g["weights"]["classification"] for g in points]
    return weights[int(np.argmin(scores))], dict(
        zip([f"{w:.2f}" for w in weights], scores.tolist(), strict=True)
    )


ROW_LABELS = {
    "classification_only": "Classification only",
    "reconstruction_only": "Reconstruction only",
    "unweighted": "Unweighted sum of losses",
    "approx_optimal": "Approx. optimal fixed weights",
    "learned_likelihood": "Learned weights, likelihood convention",
    "learned_paper": "Learned weights, paper convention (ablation)",
}


def _summarise(
    config: StudyConfig,
    splits: ImageSplits,
    specs: Sequence[RunSpec],
    results: dict[tuple[str, int], dict[str, Any]],
) -> dict[str, Any]:
    seeds = config.seeds
    grid = [
        {
            "weights": spec.weights,
            "run_id": spec.run_id,
            "val": _metric_summaries(results, spec.run_id, seeds, "val"),
            "test": _metric_summaries(results, spec.run_id, seeds, "test"),
        }
        for spec in specs
        if spec.weights is not None
    ]
    chosen, scores = select_weight(grid)
    row_runs = {
        "classification_only": RunSpec.fixed(1.0).run_id,
        "reconstruction_only": RunSpec.fixed(0.0).run_id,
        "unweighted": RunSpec.fixed(0.5).run_id,
        "learned_likelihood": RunSpec.learned("likelihood").run_id,
        "learned_paper": RunSpec.learned("paper").run_id,
    }
    if chosen is not None:
        row_runs["approx_optimal"] = RunSpec.fixed(chosen).run_id
    rows: dict[str, Any] = {}
    for row in ROW_LABELS:
        if row not in row_runs:
            continue
        run_id = row_runs[row]
        first = results[run_id, 0]
        entry: dict[str, Any] = {
            "label": ROW_LABELS[row],
            "run_id": run_id,
            "weights": first["weights"],
            "convention": first["convention"],
            "test": _metric_summaries(results, run_id, seeds, "test"),
            "val": _metric_summaries(results, run_id, seeds, "val"),
        }
        if first["log_variances"]:
            entry["final_log_variances"] = {
                t: summarise([results[run_id, s]["log_variances"][t] for s in range(seeds)])
                for t in TASKS
            }
            entry["final_effective_weights"] = {
                t: summarise([results[run_id, s]["effective_weights"][t] for s in range(seeds)])
                for t in TASKS
            }
        rows[row] = entry
    return {
        "study": "two-task",
        "dataset": config.dataset,
        "split_sizes": {s: len(getattr(splits, s)[1]) for s in ("train", "val", "test")},
        "image_size": splits.image_size,
        "seeds": list(range(seeds)),
        "config": _config_dict(config),
        "rows": rows,
        "grid": grid,
        "approx_optimal": {
            "weights": None if chosen is None else RunSpec.fixed(chosen).weights,
            "criterion": SELECTION_CRITERION,
            "scores": scores,
        },
        "reference": {
            "source": "Key (2019), AML reproduction report, Table 1 (Fashion-MNIST, test split)",
            "rows": REFERENCE,
            "approx_optimal_weights": REFERENCE_APPROX_OPTIMAL,
        },
    }


def _weights_cell(row: dict[str, Any]) -> str:
    if row["weights"] is not None:
        return ", ".join(f"{row['weights'][t]:.2g}" for t in TASKS)
    ws = row.get("final_effective_weights")
    if not ws:
        return "learned"
    return "learned → " + ", ".join(f"{ws[t]['mean']:.3g}" for t in TASKS)


def _table(summary: dict[str, Any]) -> str:
    seeds = len(summary["seeds"])
    sizes = summary["split_sizes"]
    headers = [
        "Loss",
        "Task weights (class., recon.)",
        "Accuracy [%] ↑",
        "Recon. L1 ↓",
        "Report: accuracy [%]",
        "Report: recon. L1",
    ]
    lines = []
    for key, row in summary["rows"].items():
        ref = REFERENCE.get(key, {})
        test = row["test"]
        lines.append(
            [
                row["label"],
                _weights_cell(row),
                format_mean_std(test.get("accuracy"), 2),
                format_mean_std(test.get("reconstruction_l1"), 4),
                f"{ref['accuracy']:.1f}" if "accuracy" in ref else "–",
                f"{ref['reconstruction_l1']:.4f}" if "reconstruction_l1" in ref else "–",
            ]
        )
    chosen = summary["approx_optimal"]["weights"]
    dataset = summary["dataset"]
    text = [
        f"# Two-task study on {dataset}: classification + reconstruction",
        "",
        f"Test split, mean ± sample std over {seeds} seed(s); {sizes['train']} train / "
        f"{sizes['val']} val / {sizes['test']} test images of "
        f"{summary['image_size']}×{summary['image_size']}. "
        "Reconstruction L1 is the mean absolute pixel error with pixels in [0, 1]. For learned "
        "rows the weights column gives the final effective weights (on the losses) averaged over "
        "seeds.",
        "",
        markdown_table(headers, lines),
        "The report's numbers are Key (2019), Table 1, on Fashion-MNIST"
        + (
            ", so on digits only the ordering of the rows can be compared, not the values. "
            if dataset != "fashion-mnist"
            else ". "
        )
        + "The report's learned row used the Gaussian term for its L1 loss (its eq. 32); it is "
        "listed beside our paper-convention row. Its approximately optimal weights were "
        f"{REFERENCE_APPROX_OPTIMAL['classification']}, "
        f"{REFERENCE_APPROX_OPTIMAL['reconstruction']}.",
        "",
        "Approx. optimal weights chosen on the validation split: "
        + (
            "none (the grid has no multi-task point)"
            if chosen is None
            else f"classification {chosen['classification']:.2f}, "
            f"reconstruction {chosen['reconstruction']:.2f}"
        )
        + f". Criterion: {SELECTION_CRITERION}",
        "",
    ]
    return "\n".join(text)


def _plot_log_variances(
    out: Path, config: StudyConfig, results: dict[tuple[str, int], dict[str, Any]]
) -> None:
    """Report Figure 4: learned ``s`` per task over training, with the closed-form optimum of
    each task's term for the current (smoothed) training loss dashed."""
    fig, axes = new_figure(2)
    colours = {"classification": "tab:blue", "reconstruction": "tab:orange"}
    for ax, convention in zip(axes, ("likelihood", "paper"), strict=True):
        spec = RunSpec.learned(convention)
        weighting = spec.make_weighting(config)
        assert isinstance(weighting, UncertaintyWeighting)
        for seed in range(config.seeds):
            records = _read_jsonl(out / "runs" / spec.run_id / f"seed{seed}" / "metrics.jsonl")
            steps = [r["step"] for r in records]
            for task in TASKS:
                label = task if seed == 0 else None
                ax.plot(
                    steps,
                    [r[f"log_var/{task}"] for r in records],
                    color=colours[task],
                    lw=1.2,
                    label=label,
                )
                likelihood = weighting.term_likelihood(task)
                optimum = [
                    optimal_log_variance(likelihood, max(v, 1e-12))
                    for v in ema([r[f"loss/{task}"] for r in records])
                ]
                ax.plot(
                    steps,
                    optimum,
                    color=colours[task],
                    lw=0.8,
                    ls="--",
                    label=f"optimum for current {task} loss" if seed == 0 else None,
                )
        ax.set_title(f"learned s = log σ², {convention} convention")
        ax.set_xlabel("step")
        ax.set_ylabel("s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, out / "fig_log_variances.png")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _plot_grid(path: Path, summary: dict[str, Any]) -> None:
    """Report Figure 3: validation metrics over the fixed-weight grid, learned rows as lines."""
    fig, axes = new_figure(2)
    panels = (("accuracy", "validation accuracy [%] ↑"), ("reconstruction_l1", "validation L1 ↓"))
    chosen = summary["approx_optimal"]["weights"]
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        points = [g for g in summary["grid"] if metric in g["val"]]
        xs = [g["weights"]["classification"] for g in points]
        ax.errorbar(
            xs,
            [g["val"][metric]["mean"] for g in points],
            yerr=[g["val"][metric]["std"] for g in points],
            marker="o",
            capsize=3,
            label="fixed weights",
        )
        for key, style in (("learned_likelihood", "-"), ("learned_paper", ":")):
            row = summary["rows"].get(key)
            if row:
                ax.axhline(
                    row["val"][metric]["mean"], color="tab:red", ls=style, label=row["label"]
                )
        if chosen is not None:
            ax.axvline(
                chosen["classification"],
                color="grey",
                ls="--",
                lw=0.8,
                label="chosen (approx. optimal)",
            )
        ax.set_xlabel("classification weight w (reconstruction 1 − w)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _plot_test_curves(
    path: Path,
    config: StudyConfig,
    summary: dict[str, Any],
    results: dict[tuple[str, int], dict[str, Any]],
) -> None:
    """Report Figure 2: test metrics of each row over training (mean ± std over seeds)."""
    fig, axes = new_figure(2)
    panels = (("test/accuracy", "test accuracy [%] ↑"), ("test/reconstruction_l1", "test L1 ↓"))
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        for row in summary["rows"].values():
            histories = [results[row["run_id"], s]["history"] for s in range(config.seeds)]
            if metric not in histories[0][-1]:
                continue
            steps = [h["step"] for h in histories[0]]
            # The step-0 point (untrained) would squash the interesting range.
            mean_band(
                ax,
                steps[1:],
                [[h[metric] for h in hist[1:]] for hist in histories],
                label=row["label"],
                lw=1.2,
            )
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
