"""The two-task study of the reproduction report (Key 2019, §3): classification + reconstruction.

One small convolutional auto-encoder with a classification head learns to classify images
(cross-entropy, softmax likelihood) and to reconstruct them (L1, Laplace likelihood). Rows, as in
the report's Table 1, plus our ablation:

* classification only, reconstruction only (one-hot fixed weights);
* unweighted sum (0.5, 0.5);
* approximately optimal fixed weights: the best multi-task point of a weight grid, chosen on the
  validation split (:data:`~uncertainty_mtl.experiments.selection.CANDIDATE_CRITERION`);
* learned weights, likelihood convention (softmax term for cross-entropy, Laplace term for L1);
* learned weights, paper convention (Gaussian term for the L1 loss too): the report's
  "incorrect coefficients" (its eq. 32), kept as an ablation.

Every fixed-weight point of the grid is trained for every seed (the grid's ends are the single-task
rows, its middle the unweighted row). The test split is evaluated for the reported numbers and the
curves only; no choice looks at it. The runs go through the common runner
(``experiments.runner``): finished runs are found on disk, so an interrupted study resumes where
it stopped (a run itself takes seconds and restarts from its first step).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from uncertainty_mtl._io import write_json, write_text
from uncertainty_mtl.config import WEIGHTING_KINDS, WeightingConfig
from uncertainty_mtl.data.mnist_like import (
    ImageSplits,
    load_digits_splits,
    load_fashion_mnist_splits,
)
from uncertainty_mtl.engine.builders import weighting_from
from uncertainty_mtl.engine.cost import peak_memory, reset_peak_memory
from uncertainty_mtl.engine.step import update
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments.executors import Job
from uncertainty_mtl.experiments.runner import Run
from uncertainty_mtl.models.autoencoder import ConvAutoencoderClassifier
from uncertainty_mtl.tasks import classification, reconstruction
from uncertainty_mtl.tasks.registry import TASKS as TASK_SPECS
from uncertainty_mtl.weighting import (
    FixedWeighting,
    UncertaintyWeighting,
    Weighting,
    parameter_groups,
)

__all__ = [
    "PRESETS",
    "REFERENCE",
    "StudyConfig",
    "TwoTaskRun",
    "TwoTaskStudy",
    "method_run",
    "smoke_config",
    "train_run",
]

TASKS = ("classification", "reconstruction")
LIKELIHOODS = {t: TASK_SPECS[t].likelihood for t in TASKS}
#: The weighting kinds a ``method`` run may name (fixed weights and the learned uncertainty
#: weighting are the study's own rows).
METHOD_KINDS = tuple(k for k in WEIGHTING_KINDS if k not in ("fixed", "uncertainty"))

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
            raise ConfigError(f"dataset must be 'digits' or 'fashion-mnist', got {self.dataset!r}")
        for name in ("seeds", "epochs", "batch_size", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not all(0.0 <= w <= 1.0 for w in self.grid):
            raise ConfigError(f"grid weights must lie in [0, 1], got {list(self.grid)}")
        if not self.lr > 0 or (self.weighting_lr is not None and not self.weighting_lr > 0):
            raise ConfigError("learning rates must be > 0")

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
class TwoTaskRun:
    """One run's resolved config: the study's settings, the weighting and the seed.

    Attributes:
        weights: fixed weights ``{task: w}`` (a task of weight 0 is not trained), or
        convention: ``"likelihood"`` or ``"paper"`` for learned weights, or
        method: another ``weighting.kind`` of the methods benchmark (``equal``, ``dwa``, a
            gradient aggregator, ...) with its default parameters.
        seed: initialisation and batch order.
        device: where it trains (not part of what the run is).
    """

    dataset: str
    data_dir: str | None
    epochs: int
    batch_size: int
    lr: float
    weighting_lr: float | None
    init_log_var: float
    eval_every: int
    log_every: int
    max_train: int | None
    max_eval: int | None
    weights: dict[str, float] | None = None
    convention: str | None = None
    method: str | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.weights, self.convention, self.method)]
        if sum(given) != 1:
            raise ValueError(
                "a two-task run has one of: fixed weights, a learned convention, a method"
            )
        if self.convention not in (None, "likelihood", "paper"):
            raise ValueError(f"convention must be 'likelihood' or 'paper', got {self.convention}")
        if self.method is not None and self.method not in METHOD_KINDS:
            raise ValueError(f"method must be one of {list(METHOD_KINDS)}, got {self.method!r}")

    @property
    def tasks(self) -> tuple[str, ...]:
        weights = self.weights
        return TASKS if weights is None else tuple(t for t in TASKS if weights[t] > 0)

    def make_weighting(self) -> Weighting:
        if self.method is not None:
            return weighting_from(
                WeightingConfig(kind=self.method),
                TASKS,
                seed=self.seed,
                lr=self.weighting_lr or self.lr,
            )
        if self.weights is not None:
            return FixedWeighting(self.weights)
        assert self.convention is not None
        return UncertaintyWeighting(
            LIKELIHOODS, init_log_var=self.init_log_var, convention=self.convention
        )


def fixed_run(w: float, seed: int = 0) -> Run:
    """The grid point with classification weight ``w`` (reconstruction ``1 - w``)."""
    weights = {"classification": w, "reconstruction": 1.0 - w}
    return Run(f"fixed-{w:.2f}", {"weights": weights}, seed)


def learned_run(convention: str, seed: int = 0) -> Run:
    return Run(f"learned-{convention}", {"convention": convention}, seed)


def method_run(method: str, seed: int = 0) -> Run:
    """A run of the methods benchmark: ``method`` (a ``weighting.kind``) on both tasks."""
    return Run(f"method-{method}", {"method": method}, seed)


def load_splits(config: StudyConfig | TwoTaskRun) -> ImageSplits:
    """The configured data set's train/val/test splits (errors name the bad file)."""
    return _splits(config.dataset, config.data_dir, config.max_train, config.max_eval)


@cache
def _splits(
    dataset: str, data_dir: str | None, max_train: int | None, max_eval: int | None
) -> ImageSplits:
    if dataset == "digits":
        splits = load_digits_splits()
    elif data_dir is None:
        raise ConfigError(
            "dataset 'fashion-mnist' needs data_dir (--data-dir): the directory holding "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (each may be .gz)"
        )
    else:
        splits = load_fashion_mnist_splits(data_dir)
    if max_train is not None or max_eval is not None:
        splits = splits.subset(max_train or len(splits.train[1]), max_eval or 10**9)
    return splits


@dataclass
class TwoTaskStudy:
    """The two-task study's runs for the runner: each run's patch applied once to the study's
    settings."""

    config: StudyConfig
    device: str = "cpu"
    result_file: str = "result.json"

    def resolve(self, run: Run, *, parallel: bool = False) -> TwoTaskRun:
        base = {k: v for k, v in asdict(self.config).items() if k not in ("seeds", "grid")}
        return TwoTaskRun(**{**base, **run.patch, "seed": run.seed, "device": self.device})

    def identity(self, config: TwoTaskRun) -> dict[str, Any]:
        settings = asdict(config)
        for volatile in ("seed", "device", "data_dir"):
            settings.pop(volatile)
        if settings["method"] is None:  # the runs from before the methods keep their identity
            settings.pop("method")
        return settings

    def job(self, config: TwoTaskRun, run_dir: Path) -> Job:
        return Job(f"{run_dir.parent.name}/{run_dir.name}", train_run, (config, run_dir))

    def prepare(self, *, progress: bool = True) -> None:
        load_splits(self.config)


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


def train_run(run: TwoTaskRun, run_dir: Path, *, progress: bool = False) -> dict[str, Any]:
    """Trains one row for one seed and writes ``metrics.jsonl`` and ``result.json`` in
    ``run_dir``; returns the result."""
    start = time.perf_counter()
    splits = load_splits(run)
    device = torch.device(run.device)
    x_train, y_train = (torch.from_numpy(a).to(device) for a in splits.train)
    evals = {
        split: tuple(torch.from_numpy(a).to(device) for a in getattr(splits, split))
        for split in ("val", "test")
    }
    torch.manual_seed(run.seed)
    model = ConvAutoencoderClassifier(
        splits.image_size,
        tasks=run.tasks,
        num_classes=splits.num_classes,
        mean=float(x_train.mean()),
        std=float(x_train.std()),
    ).to(device)
    weighting = run.make_weighting().to(device)
    optimiser = torch.optim.Adam(
        parameter_groups(
            model, weighting, lr=run.lr, weight_decay=0.0, weighting_lr=run.weighting_lr
        )
    )
    order = torch.Generator().manual_seed(run.seed)
    steps_per_epoch = math.ceil(len(y_train) / run.batch_size)
    total_steps = run.epochs * steps_per_epoch

    def evaluation(step: int) -> dict[str, Any]:
        row: dict[str, Any] = {"step": step}
        for split, (x, y) in evals.items():
            row.update({f"{split}/{k}": v for k, v in evaluate(model, x, y).items()})
        return row

    from tqdm.auto import tqdm

    run_dir.mkdir(parents=True, exist_ok=True)
    records: list[str] = []
    history = [evaluation(0)]
    step = 0
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # the update's hooks expect one
    reset_peak_memory(device)
    evaluating = 0.0  # seconds spent on the curves' evaluations, not on training
    looping = time.perf_counter()
    bar = tqdm(total=total_steps, desc=str(run_dir), leave=False, disable=not progress)
    for epoch in range(run.epochs):
        weighting.on_epoch(epoch)  # epoch statistics (DWA's loss ratios)
        for index in torch.split(torch.randperm(len(y_train), generator=order), run.batch_size):
            x, y = x_train[index], y_train[index]
            code = model.features(x)
            losses = task_losses(model.outputs(code), x, y)
            total = weighting(losses)
            features = code if weighting.needs_features else None
            update(model, weighting, optimiser, scaler, total, losses, features)
            step += 1
            if step % run.log_every == 0:
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
            if step % run.eval_every == 0 or step == total_steps:
                tic = time.perf_counter()
                history.append(evaluation(step))
                evaluating += time.perf_counter() - tic
            bar.update()
    bar.close()
    training_seconds = time.perf_counter() - looping - evaluating
    write_text(run_dir / "metrics.jsonl", "\n".join(records) + "\n")
    result = {
        "seed": run.seed,
        "tasks": list(run.tasks),
        "weights": run.weights,
        "convention": run.convention,
        "method": run.method,
        "steps": total_steps,
        "final": {"val": evaluate(model, *evals["val"]), "test": evaluate(model, *evals["test"])},
        "log_variances": weighting.log_variances(),
        "effective_weights": weighting.effective_weights(),
        "history": history,
        "wall_time_s": time.perf_counter() - start,
        "training_seconds": training_seconds,
        **peak_memory(device),
    }
    write_json(run_dir / "result.json", result)
    return result


def config_dict(config: StudyConfig) -> dict[str, Any]:
    d = asdict(config)
    d["grid"] = list(config.grid)
    return d
