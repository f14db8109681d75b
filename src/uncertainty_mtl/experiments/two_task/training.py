"""One two-task run: its data, its losses and metrics, trained by the one loop
(:class:`~uncertainty_mtl.engine.loop.Loop`: checkpoints, exact resume, the non-finite checks,
``metrics.jsonl``, TensorBoard) into a run directory like a scene run's: ``results.json`` holds
``split``, ``metrics``, ``training``, and the study's own keys."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from uncertainty_mtl.data.mnist_like import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_HOW_TO_GET,
    ImageSplits,
    default_fashion_mnist_dir,
    load_digits_splits,
    load_fashion_mnist_splits,
)
from uncertainty_mtl.engine.cost import Phases
from uncertainty_mtl.engine.distributed import Process
from uncertainty_mtl.engine.in_memory import InMemoryLoop
from uncertainty_mtl.engine.loop import checkpoint_epochs
from uncertainty_mtl.engine.rundir import plain_settings, train_in_directory
from uncertainty_mtl.engine.step import update
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments.two_task.config import StudyConfig, TwoTaskRun
from uncertainty_mtl.models.autoencoder import ConvAutoencoderClassifier
from uncertainty_mtl.tasks import classification, reconstruction
from uncertainty_mtl.weighting import Weighting, parameter_groups

__all__ = [
    "RESULT_FILE",
    "TwoTaskLoop",
    "build_training",
    "evaluate",
    "forward_pass",
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


def forward_pass(
    model: ConvAutoencoderClassifier, weighting: Weighting, images: Tensor, labels: Tensor
) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """The weighted total of a batch, its task losses, and the code (the shared features) when
    the weighting aggregates task gradients."""
    code = model.features(images)
    losses = task_losses(model.outputs(code), images, labels)
    return weighting(losses), losses, code if weighting.needs_features else None


def train_step(
    model: ConvAutoencoderClassifier,
    weighting: Weighting,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: Tensor,
    labels: Tensor,
) -> tuple[dict[str, Tensor], Tensor]:
    """One optimiser step of the study on a batch, outside a run (the step cost's timing):
    the task losses and the weighted total."""
    total, losses, features = forward_pass(model, weighting, images, labels)
    update(model, weighting, optimiser, scaler, total, losses, features)
    return losses, total


class TwoTaskLoop(InMemoryLoop):
    """One two-task run on the one loop: the splits on the device, a fresh order of the
    training images every epoch (from the run's seed), the curves on val and test every
    ``eval_every`` steps (``history``), and the last model evaluated on both."""

    model: ConvAutoencoderClassifier

    def __init__(
        self, run: TwoTaskRun, out: Path, *, progress: bool = False, phases: Phases | None = None
    ) -> None:
        self.settings = run
        splits = load_splits(run)
        device = torch.device(run.device)
        self.x_train, self.y_train = (torch.from_numpy(a).to(device) for a in splits.train)
        self.evals = {
            split: tuple(torch.from_numpy(a).to(device) for a in getattr(splits, split))
            for split in ("val", "test")
        }
        torch.manual_seed(run.seed)
        self.model, self.weighting, self.optimiser = build_training(
            run,
            splits.image_size,
            splits.num_classes,
            mean=float(self.x_train.mean()),
            std=float(self.x_train.std()),
            device=device,
        )
        self.tasks = self.model.tasks
        self.steps_per_epoch = math.ceil(len(self.y_train) / run.batch_size)
        self.n_train = len(self.y_train)
        self.history = []
        super().__init__(
            out,
            Process(0, 1, device),
            plain_settings(run),
            steps=run.epochs * self.steps_per_epoch,
            log_every=run.log_every,
            checkpoint_every=self.steps_per_epoch * checkpoint_epochs(run.epochs),
            eval_every=run.eval_every,
            progress=progress,
            phases=phases,
        )

    def batches(self) -> Iterator[Tensor]:
        if not self.history:  # the curves start at the initialisation
            with self.phases("validation"):
                self.history.append(self.evaluation())
        yield from super().batches()

    def forward(self, batch: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        images = _layout(self.x_train[batch], self.settings.channels_last)
        return forward_pass(self.model, self.weighting, images, self.y_train[batch])

    def evaluation(self) -> dict[str, Any]:
        row: dict[str, Any] = {"step": self.step}
        for split, (x, y) in self.evals.items():
            metrics = evaluate(self.model, x, y, channels_last=self.settings.channels_last)
            row.update({f"{split}/{k}": v for k, v in metrics.items()})
        return row

    def evaluate_on_selection(self) -> None:
        self.history.append(self.evaluation())

    def finish(self, train_seconds: float) -> dict[str, Any]:
        run = self.settings
        with self.phases("final_evaluation"):
            final = {
                split: evaluate(self.model, *self.evals[split], channels_last=run.channels_last)
                for split in ("val", "test")
            }
        return self.report(
            final,
            train_seconds,
            **run.named(),
        )


def train_run(run: TwoTaskRun, run_dir: Path, **options: Any) -> dict[str, Any]:
    """Trains one row for one seed into ``run_dir`` and returns the content of its
    ``results.json`` (``options``: :func:`~uncertainty_mtl.engine.rundir.train_in_directory`'s
    ``resume``, ``progress``, ``on_step``)."""
    return train_in_directory(TwoTaskLoop, run, run_dir, **options)
