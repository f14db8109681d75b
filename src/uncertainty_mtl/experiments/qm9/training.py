"""One QM9 run: its data, losses and metrics, trained by the one loop
(:class:`~uncertainty_mtl.engine.loop.Loop`: every weighting's hooks, checkpoints, exact resume,
the non-finite checks, ``metrics.jsonl``, TensorBoard) into a run directory like the other
studies' runs."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uncertainty_mtl.data.qm9 import ALL_TARGETS, QM9Arrays, load_qm9_arrays
from uncertainty_mtl.engine.cost import Phases
from uncertainty_mtl.engine.distributed import Process
from uncertainty_mtl.engine.in_memory import InMemoryLoop
from uncertainty_mtl.engine.loop import checkpoint_epochs
from uncertainty_mtl.engine.rundir import plain_settings, train_in_directory
from uncertainty_mtl.experiments.qm9.config import QM9Run
from uncertainty_mtl.models.descriptor_mlp import DescriptorMLP
from uncertainty_mtl.models.molecule_gnn import SchNetMultiTask
from uncertainty_mtl.weighting import parameter_groups

__all__ = [
    "RESULT_FILE",
    "QM9Loop",
    "load_arrays",
    "mean_absolute_errors",
    "train_run",
]

RESULT_FILE = "results.json"
_COLUMN = {t.name: i for i, t in enumerate(ALL_TARGETS)}
#: Where the descriptors are cached between runs and studies.
CACHE_DIR = Path("data") / "cache"


@cache
def load_arrays(
    data_dir: str | None,
    max_train: int | None = None,
    max_eval: int | None = None,
    split: tuple[int, int] = (110_000, 10_000),
) -> QM9Arrays:
    """The study's arrays (cached on disk and in the process), cut to the smoke sizes."""
    arrays = load_qm9_arrays(data_dir, cache_dir=CACHE_DIR, sizes=(split[0], split[1]))
    if max_train is None and max_eval is None:
        return arrays
    cut = {"train": max_train, "val": max_eval, "test": max_eval}
    kept = {s: idx[: cut[s]] if cut[s] else idx for s, idx in arrays.split.items()}
    return replace(arrays, split=kept)


#: A batch of the model's inputs: the descriptors ``[B, F]`` (MLP), or the charges ``[B, A]``
#: and positions ``[B, A, 3]`` (SchNet).
Inputs = Tensor | tuple[Tensor, Tensor]
#: Molecules a forward pass of the evaluation takes at once.
EVAL_CHUNK = 2048


def _take(x: Inputs, index: Tensor | slice) -> Inputs:
    return (x[0][index], x[1][index]) if isinstance(x, tuple) else x[index]


def _inputs(run: QM9Run, arrays: QM9Arrays, idx: np.ndarray, device: torch.device) -> Inputs:
    if run.model == "schnet":
        assert arrays.charges is not None and arrays.positions is not None
        charges = torch.from_numpy(arrays.charges[idx].astype(np.int64))
        return charges.to(device), torch.from_numpy(arrays.positions[idx]).to(device)
    return torch.from_numpy(arrays.features[idx]).to(device)


def _model(run: QM9Run, x_train: Inputs) -> DescriptorMLP | SchNetMultiTask:
    if run.model == "schnet":
        hidden, interactions, cutoff = run.schnet
        return SchNetMultiTask(
            run.tasks, hidden=int(hidden), interactions=int(interactions), cutoff=cutoff
        )
    assert isinstance(x_train, Tensor)
    return DescriptorMLP(
        x_train.shape[1], run.tasks, hidden=run.hidden, mean=x_train.mean(0), std=x_train.std(0)
    )


def _scaling(run: QM9Run, arrays: QM9Arrays) -> tuple[np.ndarray, np.ndarray]:
    """Each trained target's centre and scale, from the training split only: the targets are
    trained as ``(y − centre) / scale`` (scale 1 in raw units)."""
    columns = [_COLUMN[t] for t in run.tasks]
    train = arrays.targets[arrays.split["train"]][:, columns]
    scale = train.std(axis=0) if run.units == "standardised" else np.ones(len(columns))
    return train.mean(axis=0), scale


@torch.no_grad()
def mean_absolute_errors(
    model: DescriptorMLP | SchNetMultiTask, x: Inputs, y: Tensor, centre: Tensor, scale: Tensor
) -> dict[str, float]:
    """Each target's MAE in its own unit (``y`` in those units; the model's outputs are
    mapped back with ``centre`` and ``scale``), :data:`EVAL_CHUNK` molecules at a time."""
    was_training = model.training
    model.eval()
    tasks = model.tasks
    total = dict.fromkeys(tasks, 0.0)
    for start in range(0, len(y), EVAL_CHUNK):
        chunk = slice(start, start + EVAL_CHUNK)
        out = model(_take(x, chunk))
        for i, task in enumerate(tasks):
            prediction = out[task].double() * scale[i] + centre[i]
            total[task] += float((prediction - y[chunk, i]).abs().sum())
    model.train(was_training)
    return {t: v / len(y) for t, v in total.items()}


class QM9Loop(InMemoryLoop):
    """One QM9 run on the one loop: the splits on the device, the targets standardised (or
    not) by the training split's statistics, a fresh order every epoch (from the run's seed),
    each target's MAE on val after every epoch (``history``), and the last model evaluated on
    val and test in each target's own unit."""

    model: DescriptorMLP | SchNetMultiTask

    def __init__(
        self, run: QM9Run, out: Path, *, progress: bool = False, phases: Phases | None = None
    ) -> None:
        self.settings = run
        arrays = load_arrays(run.data_dir, run.max_train, run.max_eval, tuple(run.split))
        device = torch.device(run.device)
        columns = [_COLUMN[t] for t in run.tasks]
        centre, self.scale_np = _scaling(run, arrays)
        self.centre = torch.from_numpy(centre).to(device)
        self.scale = torch.from_numpy(self.scale_np).to(device)

        def split(name: str) -> tuple[Inputs, Tensor]:
            idx = arrays.split[name]
            x = _inputs(run, arrays, idx, device)
            return x, torch.from_numpy(arrays.targets[idx][:, columns]).to(device)

        self.x_train, y_train = split("train")
        self.n_train = len(y_train)
        self.evals = {s: split(s) for s in ("val", "test")}
        self.targets = ((y_train - self.centre) / self.scale).float()
        torch.manual_seed(run.seed)
        self.model = _model(run, self.x_train).to(device)
        self.weighting = run.make_weighting().to(device)
        self.optimiser = torch.optim.Adam(
            parameter_groups(self.model, self.weighting, lr=run.lr, weight_decay=0.0)
        )
        self.tasks = run.tasks
        self.steps_per_epoch = math.ceil(self.n_train / run.batch_size)
        self.history = []
        super().__init__(
            out,
            Process(0, 1, device),
            plain_settings(run),
            steps=run.epochs * self.steps_per_epoch,
            log_every=max(1, self.steps_per_epoch // 4),
            checkpoint_every=self.steps_per_epoch * checkpoint_epochs(run.epochs),
            eval_every=self.steps_per_epoch,
            progress=progress,
            phases=phases,
        )

    def forward(self, batch: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        code = self.model.features(_take(self.x_train, batch))  # type: ignore[arg-type]
        out = self.model.outputs(code)
        truth = self.targets[batch]
        losses = {t: ((out[t] - truth[:, i]) ** 2).mean() for i, t in enumerate(self.tasks)}
        return self.weighting(losses), losses, code if self.weighting.needs_features else None

    def errors(self, split: str) -> dict[str, float]:
        return mean_absolute_errors(self.model, *self.evals[split], self.centre, self.scale)

    def evaluate_on_selection(self) -> None:
        epoch = self.step // self.steps_per_epoch
        self.history.append(
            {"epoch": epoch, **{f"val/{t}": v for t, v in self.errors("val").items()}}
        )

    def finish(self, train_seconds: float) -> dict[str, Any]:
        run = self.settings
        with self.phases("final_evaluation"):
            final = {s: self.errors(s) for s in ("val", "test")}
        return self.report(
            final,
            train_seconds,
            method=run.row,
            units=run.units,
            scale=dict(zip(run.tasks, self.scale_np.tolist(), strict=True)),
        )


def train_run(run: QM9Run, run_dir: Path, **options: Any) -> dict[str, Any]:
    """Trains one run into ``run_dir`` and returns the content of its ``results.json``
    (``options``: :func:`~uncertainty_mtl.engine.rundir.train_in_directory`'s ``resume``,
    ``progress``, ``on_step``)."""
    return train_in_directory(QM9Loop, run, run_dir, **options)
