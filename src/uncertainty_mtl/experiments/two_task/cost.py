"""What a training step of the two-task study costs, method by method: the study's own step
(:func:`~uncertainty_mtl.experiments.two_task.training.train_step`) on random batches of its
data set's size, timed alone. The methods benchmark's figure plots this, not the seconds its
runs took (those mix whatever else the machine did), and ``bench/bench_methods.py --part
two-task`` prints it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping

import torch

from uncertainty_mtl.engine.cost import time_in_turns
from uncertainty_mtl.experiments.two_task.config import TwoTaskRun
from uncertainty_mtl.experiments.two_task.training import build_training, train_step

__all__ = ["IMAGE_SIZE", "step_costs"]

#: The side of each data set's square images.
IMAGE_SIZE = {"digits": 8, "fashion-mnist": 28}
#: Both data sets' number of classes.
CLASSES = 10


def _step(run: TwoTaskRun, batches: int = 8) -> Callable[[], None]:
    """The run's training step, at its own rates, on a cycle of ``batches`` random batches:
    a real step each time, so that a method whose cost depends on what it sees (Nash-MTL's
    solver, warm-started from its last weights) is not timed on one problem solved over and
    over."""
    size = IMAGE_SIZE[run.dataset]
    torch.manual_seed(0)
    model, weighting, optimiser = build_training(
        run, size, CLASSES, mean=0.5, std=0.3, device=torch.device("cpu")
    )
    data = [
        (torch.rand(run.batch_size, 1, size, size), torch.randint(0, CLASSES, (run.batch_size,)))
        for _ in range(batches)
    ]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    turn = itertools.cycle(data)

    def step() -> None:
        images, labels = next(turn)
        train_step(model, weighting, optimiser, scaler, images, labels)

    return step


def step_costs(
    runs: Mapping[str, TwoTaskRun], *, rounds: int = 7, per_block: int = 5, threads: int = 1
) -> dict[str, dict[str, float]]:
    """Each run's cost (name -> run, ``equal`` among them), timed by
    :func:`~uncertainty_mtl.engine.cost.time_in_turns`: ``step_seconds`` and
    ``cost_vs_equal``."""
    builds = {name: functools.partial(_step, run) for name, run in runs.items()}
    return time_in_turns(builds, rounds=rounds, per_block=per_block, threads=threads)
