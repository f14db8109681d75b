"""One QM9 run: its data, losses and metrics, trained through the engine's step
(:func:`~uncertainty_mtl.engine.step.update`, so every weighting's hooks run) and recorded as
the other studies' runs are: ``metrics.jsonl`` and ``results.json``."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uncertainty_mtl._io import write_json, write_text
from uncertainty_mtl.data.qm9 import ALL_TARGETS, QM9Arrays, load_qm9_arrays
from uncertainty_mtl.engine.cost import peak_memory, reset_peak_memory
from uncertainty_mtl.engine.step import log_record, update
from uncertainty_mtl.experiments.qm9.config import QM9Run
from uncertainty_mtl.models.descriptor_mlp import DescriptorMLP
from uncertainty_mtl.models.molecule_gnn import SchNetMultiTask
from uncertainty_mtl.weighting import parameter_groups

__all__ = ["RESULT_FILE", "load_arrays", "mean_absolute_errors", "train_run"]

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


def train_run(run: QM9Run, run_dir: Path, *, progress: bool = False) -> dict[str, Any]:
    """Trains one run and writes ``metrics.jsonl`` and ``results.json``; returns the result."""
    start = time.perf_counter()
    arrays = load_arrays(run.data_dir, run.max_train, run.max_eval, tuple(run.split))
    device = torch.device(run.device)
    columns = [_COLUMN[t] for t in run.tasks]
    centre_np, scale_np = _scaling(run, arrays)
    centre = torch.from_numpy(centre_np).to(device)
    scale = torch.from_numpy(scale_np).to(device)

    def split(name: str) -> tuple[Inputs, Tensor]:
        idx = arrays.split[name]
        x = _inputs(run, arrays, idx, device)
        return x, torch.from_numpy(arrays.targets[idx][:, columns]).to(device)

    x_train, y_train = split("train")
    evals = {s: split(s) for s in ("val", "test")}
    targets = ((y_train - centre) / scale).float()
    torch.manual_seed(run.seed)
    model = _model(run, x_train).to(device)
    weighting = run.make_weighting().to(device)
    optimiser = torch.optim.Adam(parameter_groups(model, weighting, lr=run.lr, weight_decay=0.0))
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # the update's hooks expect one
    order = torch.Generator().manual_seed(run.seed)
    steps_per_epoch = math.ceil(len(y_train) / run.batch_size)
    log_every = max(1, steps_per_epoch // 4)
    records: list[str] = []
    history: list[dict[str, Any]] = []
    step, evaluating = 0, 0.0
    reset_peak_memory(device)
    looping = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(
        total=run.epochs * steps_per_epoch, desc=str(run_dir), leave=False, disable=not progress
    )
    for epoch in range(run.epochs):
        weighting.on_epoch(epoch)
        for index in torch.split(torch.randperm(len(y_train), generator=order), run.batch_size):
            code = model.features(_take(x_train, index))  # type: ignore[arg-type]
            out = model.outputs(code)
            truth = targets[index]
            losses = {t: ((out[t] - truth[:, i]) ** 2).mean() for i, t in enumerate(run.tasks)}
            total = weighting(losses)
            logging = (step + 1) % log_every == 0
            ratio = update(
                model,
                weighting,
                optimiser,
                scaler,
                total,
                losses,
                code if weighting.needs_features else None,
                compare_to_equal=logging,
            )
            step += 1
            if logging:
                lr = optimiser.param_groups[0]["lr"]
                record = log_record(step, epoch, losses, total, weighting, lr, ratio)
                records.append(json.dumps(record))
            bar.update()
        tic = time.perf_counter()
        val = mean_absolute_errors(model, *evals["val"], centre, scale)
        history.append({"epoch": epoch + 1, **{f"val/{t}": v for t, v in val.items()}})
        evaluating += time.perf_counter() - tic
    bar.close()
    training_seconds = time.perf_counter() - looping - evaluating
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "metrics.jsonl", "\n".join(records) + "\n")
    final = {s: mean_absolute_errors(model, *evals[s], centre, scale) for s in ("val", "test")}
    result = {
        "split": "test",
        "metrics": final["test"],
        "training": {
            "steps": step,
            "seconds": training_seconds,
            "seconds_this_session": training_seconds,
            "seconds_per_step": training_seconds / max(step, 1),
            "wall_time_s": time.perf_counter() - start,
            **peak_memory(device),
        },
        "seed": run.seed,
        "tasks": list(run.tasks),
        "method": run.method,
        "units": run.units,
        "scale": dict(zip(run.tasks, scale_np.tolist(), strict=True)),
        "final": final,
        "log_variances": weighting.log_variances(),
        "effective_weights": weighting.effective_weights(),
        "history": history,
    }
    write_json(run_dir / RESULT_FILE, result)
    return result
