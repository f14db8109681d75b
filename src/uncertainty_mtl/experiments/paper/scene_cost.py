"""What a training step of the scene network costs, method by method: the trainer's own update
(:func:`~uncertainty_mtl.engine.step.update`) at the run's own optimiser and rate, on a cycle
of random batches of the preset's size, timed alone
(:func:`~uncertainty_mtl.engine.cost.time_in_turns`). The city's methods figure plots this,
not the seconds its runs took (those mix whatever else the machine did), and
``bench/bench_methods.py`` times the same batches.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence

import torch

from uncertainty_mtl.config import TrainConfig
from uncertainty_mtl.engine.builders import (
    NetWithLoss,
    build_model,
    build_optimiser,
    build_weighting,
    grad_scaler,
)
from uncertainty_mtl.engine.cost import time_in_turns
from uncertainty_mtl.engine.step import update

__all__ = ["input_size", "random_batch", "scene_step_costs"]


def random_batch(
    tasks: Sequence[str], batch: int, h: int, w: int, seed: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images and every task's targets, random, in the shapes the data pipeline gives."""
    g = torch.Generator().manual_seed(seed)
    targets = {
        "semantic": torch.randint(0, 19, (batch, h, w), generator=g),
        "instance_offset": torch.randn(batch, 2, h, w, generator=g),
        "instance_mask": torch.rand(batch, h, w, generator=g) < 0.1,
        "inverse_depth": torch.rand(batch, h, w, generator=g) * 20,
        "depth_mask": torch.rand(batch, h, w, generator=g) < 0.9,
    }
    return torch.randn(batch, 3, h, w, generator=g), targets


def input_size(config: TrainConfig) -> tuple[int, int]:
    """The network's input size in training: the crop, else the resize, else the synthetic
    city's frame size, else Tiny Cityscapes' 128×256."""
    d = config.data
    if d.crop:
        return d.crop[0], d.crop[1]
    if d.size:
        return d.size[0], d.size[1]
    if d.synthetic:
        return d.synth_size[0], d.synth_size[1]
    return 128, 256


def _step(config: TrainConfig, batches: int = 4) -> Callable[[], None]:
    """The run's training step on a cycle of ``batches`` random batches: real updates, so that
    a method whose cost depends on what it sees (Nash-MTL's solver) is not timed on one problem
    solved again and again."""
    h, w = input_size(config)
    torch.manual_seed(0)
    model, weighting = build_model(config), build_weighting(config)
    joint = NetWithLoss(model, weighting)
    optimiser = build_optimiser(config, model, weighting)
    scaler = grad_scaler(config, torch.device("cpu"))
    data = [
        random_batch(config.trained_tasks, config.optim.batch_size, h, w, seed)
        for seed in range(batches)
    ]
    turn = itertools.cycle(data)

    def step() -> None:
        images, targets = next(turn)
        total, losses, features = joint(images, targets)
        update(model, weighting, optimiser, scaler, total, losses, features)

    return step


def scene_step_costs(
    configs: Mapping[str, TrainConfig], *, rounds: int = 5, per_block: int = 3, threads: int = 1
) -> dict[str, dict[str, float]]:
    """Each run's ``step_seconds`` and ``cost_vs_equal`` (name -> its config, ``equal`` among
    them), timed in turns with ``threads`` torch threads (a study's workers use one each)."""
    builds = {name: functools.partial(_step, config) for name, config in configs.items()}
    return time_in_turns(builds, rounds=rounds, per_block=per_block, threads=threads, warmup=2)
