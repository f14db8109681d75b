"""Runs whose data sit in memory as tensors (the two-task and QM9 studies) on the one loop
(:class:`~uncertainty_mtl.engine.loop.Loop`): what such a study shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from uncertainty_mtl.engine.loop import Loop

__all__ = ["InMemoryLoop"]


class InMemoryLoop(Loop):
    """A run over ``n_train`` examples in memory: a fresh order of them every epoch, drawn from
    ``settings.seed`` (a batch is a tensor of their indices), its curves in ``history`` (kept
    across a resume), its last model reported. A subclass sets ``settings`` (a dataclass with
    ``seed``, ``epochs`` and ``batch_size``), ``n_train`` and ``history`` before
    ``Loop.__init__``."""

    settings: Any
    n_train: int
    history: list[dict[str, Any]]
    volatile = ("device", "data_dir")

    def bar_label(self) -> str:
        return f"{self.out.parent.name}/{self.out.name}"

    def batches(self) -> Iterator[Tensor]:
        order = torch.Generator().manual_seed(self.settings.seed)
        step = 0
        for _ in range(self.settings.epochs):
            permutation = torch.randperm(self.n_train, generator=order)
            for index in torch.split(permutation, self.settings.batch_size):
                step += 1
                if step > self.step:  # the steps a resumed run trained already are skipped
                    yield index

    def study_state(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_study_state(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])

    def report(
        self, final: dict[str, dict[str, float]], train_seconds: float, **own: Any
    ) -> dict[str, Any]:
        """Writes and returns the run's result: the keys of every run's ``results.json``
        (``split``: test, its ``metrics``, ``training``), then the study's ``own``, the
        ``final`` metrics of val and test, the weighting's log-variances and effective weights,
        and the ``history``."""
        result = {
            "split": "test",
            "metrics": final["test"],
            "training": self.training_record(train_seconds),
            "seed": self.settings.seed,
            "tasks": list(self.tasks),
            **own,
            "final": final,
            "log_variances": self.weighting.log_variances(),
            "effective_weights": self.weighting.effective_weights(),
            "history": self.history,
        }
        self.write_results(result)
        return result
