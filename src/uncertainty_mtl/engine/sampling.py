"""Which frames each step sees, and how each frame is augmented, as functions of the seed.

The batches of epoch ``e`` are a permutation seeded by ``(seed, e)``, sharded over the
processes, and the augmentation of frame ``i`` in epoch ``e`` is seeded by ``(seed, e, i)``. So a
resumed run sees exactly the batches an uninterrupted one would, whatever the number of loader
workers, and one DataLoader (with persistent workers) serves the whole run.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from uncertainty_mtl.data.cityscapes import CityscapesScenes

__all__ = ["EpochBatches", "SeededFrames", "epoch_batches"]


class SeededFrames(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Frames indexed by ``(epoch, index)``; the augmentation is seeded by
    ``(seed, epoch, index)``."""

    def __init__(self, frames: CityscapesScenes, seed: int) -> None:
        self.frames = frames
        self.seed = seed

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, dict[str, Tensor]]:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (what the transforms draw from): torch.manual_seed would
            # also seed every accelerator backend, ~100× slower, and it runs once per frame.
            torch.default_generator.manual_seed(
                (self.seed * 1_000_003 + epoch) * 10_000_019 + index
            )
            return self.frames[index]


def epoch_batches(
    n: int, batch: int, world: int, rank: int, seed: int, epoch: int
) -> list[list[int]]:
    """This process's batches of one epoch of ``n`` frames (full global batches only)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    size = batch * world
    return [order[i + rank * batch : i + (rank + 1) * batch] for i in range(0, n - size + 1, size)]


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """This process's batches of ``(epoch, index)`` keys for steps ``start`` to ``steps``.

    Args:
        n: frames in the split.
        batch: frames per process and step.
        world, rank: the processes sharing each global batch, and this one.
        seed: the run's seed.
        steps: the run's last step.
        start: steps already taken (a resumed run starts mid-epoch).
    """

    def __init__(
        self, n: int, batch: int, world: int, rank: int, seed: int, steps: int, start: int = 0
    ) -> None:
        self.n, self.batch, self.world, self.rank, self.seed = n, batch, world, rank, seed
        self.steps, self.start = steps, start
        self.per_epoch = n // (batch * world)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while step < self.steps:
            epoch, position = divmod(step, self.per_epoch)
            batches = epoch_batches(self.n, self.batch, self.world, self.rank, self.seed, epoch)
            for indices in batches[position:]:
                yield [(epoch, i) for i in indices]
                step += 1
                if step >= self.steps:
                    return
