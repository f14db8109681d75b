"""One two-task run: its data, its losses and metrics, and its training through the engine's
step (:func:`~uncertainty_mtl.engine.step.update`), recorded as a scene run is: ``metrics.jsonl``
(the engine's log record) and ``results.json`` (``split``, ``metrics``, ``training``, and the
study's own keys)."""

from __future__ import annotations

import json
import math
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from uncertainty_mtl._io import write_json, write_text
from uncertainty_mtl.data.mnist_like import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_HOW_TO_GET,
    ImageSplits,
    default_fashion_mnist_dir,
    load_digits_splits,
    load_fashion_mnist_splits,
)
from uncertainty_mtl.engine.cost import peak_memory, reset_peak_memory
from uncertainty_mtl.engine.step import log_record, update
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments.two_task.config import StudyConfig, TwoTaskRun
from uncertainty_mtl.models.autoencoder import ConvAutoencoderClassifier
from uncertainty_mtl.tasks import classification, reconstruction
from uncertainty_mtl.weighting import Weighting, parameter_groups

__all__ = [
    "RESULT_FILE",
    "build_training",
    "evaluate",
    "load_splits",
    "task_losses",
    "train_run",
    "train_step",
]

#: What a finished run holds, the scene runs' file.
RESULT_FILE = "results.json"


def load_splits(config: StudyConfig | TwoTaskRun) -> ImageSplits:
    """The configured data set's train/val/test splits (errors name the bad file)."""
    return _splits(config.dataset, config.data_dir, config.max_train, config.max_eval)


@cache
def _splits(
    dataset: str, data_dir: str | None, max_train: int | None, max_eval: int | None
) -> ImageSplits:
    if dataset == "fashion-mnist" and data_dir is None:
        data_dir = default_fashion_mnist_dir()  # Debian's package, when installed
    if dataset == "digits":
        splits = load_digits_splits()
    elif data_dir is None:
        raise ConfigError(
            "dataset 'fashion-mnist' needs its four IDX files: no --data-dir was given and "
            f"there are none in {FASHION_MNIST_DIR}; {FASHION_MNIST_HOW_TO_GET}"
        )
    else:
        splits = load_fashion_mnist_splits(data_dir)
    if max_train is not None or max_eval is not None:
        splits = splits.subset(max_train or len(splits.train[1]), max_eval or 10**9)
    return splits


@torch.no_grad()
def evaluate(
    model: ConvAutoencoderClassifier,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 1000,
    channels_last: bool = False,
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
        out = model(_layout(x, channels_last))
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


def _layout(images: Tensor, channels_last: bool) -> Tensor:
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


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


def build_training(
    run: TwoTaskRun,
    image_size: int,
    num_classes: int,
    *,
    mean: float,
    std: float,
    device: torch.device,
) -> tuple[ConvAutoencoderClassifier, Weighting, torch.optim.Optimizer]:
    """The run's network (inputs normalised by ``mean`` and ``std``), its weighting and Adam
    (the weighting's parameters in their own group, without weight decay)."""
    model = ConvAutoencoderClassifier(
        image_size, tasks=run.tasks, num_classes=num_classes, mean=mean, std=std
    ).to(device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weighting = run.make_weighting().to(device)
    optimiser = torch.optim.Adam(
        parameter_groups(
            model, weighting, lr=run.lr, weight_decay=0.0, weighting_lr=run.weighting_lr
        )
    )
    return model, weighting, optimiser


def train_step(
    model: ConvAutoencoderClassifier,
    weighting: Weighting,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: Tensor,
    labels: Tensor,
    *,
    compare_to_equal: bool = False,
) -> tuple[dict[str, Tensor], Tensor, float | None]:
    """One optimiser step of the study on a batch: the task losses, the weighted total and,
    with ``compare_to_equal``, the shared update's norm over ``equal``'s
    (:func:`~uncertainty_mtl.engine.step.update`)."""
    code = model.features(images)
    losses = task_losses(model.outputs(code), images, labels)
    total = weighting(losses)
    features = code if weighting.needs_features else None
    ratio = update(
        model, weighting, optimiser, scaler, total, losses, features,
        compare_to_equal=compare_to_equal,
    )  # fmt: skip
    return losses, total, ratio


def train_run(run: TwoTaskRun, run_dir: Path, *, progress: bool = False) -> dict[str, Any]:
    """Trains one row for one seed and writes ``metrics.jsonl`` and ``results.json`` in
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
    model, weighting, optimiser = build_training(
        run,
        splits.image_size,
        splits.num_classes,
        mean=float(x_train.mean()),
        std=float(x_train.std()),
        device=device,
    )
    order = torch.Generator().manual_seed(run.seed)
    steps_per_epoch = math.ceil(len(y_train) / run.batch_size)
    total_steps = run.epochs * steps_per_epoch

    def evaluation(step: int) -> dict[str, Any]:
        row: dict[str, Any] = {"step": step}
        for split, (x, y) in evals.items():
            metrics = evaluate(model, x, y, channels_last=run.channels_last)
            row.update({f"{split}/{k}": v for k, v in metrics.items()})
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
            x, y = _layout(x_train[index], run.channels_last), y_train[index]
            logging = (step + 1) % run.log_every == 0
            losses, total, ratio = train_step(
                model, weighting, optimiser, scaler, x, y, compare_to_equal=logging
            )
            step += 1
            if logging:
                lr = optimiser.param_groups[0]["lr"]
                record = log_record(step, epoch, losses, total, weighting, lr, ratio)
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
    final = {
        split: evaluate(model, *evals[split], channels_last=run.channels_last)
        for split in ("val", "test")
    }
    result = {
        # the keys of a scene run's results.json
        "split": "test",
        "metrics": final["test"],
        "training": {
            "steps": total_steps,
            "seconds": training_seconds,
            "seconds_this_session": training_seconds,
            "wall_time_s": time.perf_counter() - start,
            **peak_memory(device),
        },
        # the study's own
        "seed": run.seed,
        "tasks": list(run.tasks),
        "weights": run.weights,
        "convention": run.convention,
        "method": run.method,
        "final": final,
        "log_variances": weighting.log_variances(),
        "effective_weights": weighting.effective_weights(),
        "history": history,
    }
    write_json(run_dir / RESULT_FILE, result)
    return result
