"""Fixed loss weights, ``sum_t w_t · L_t``: the paper's baselines (its eq. 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from uncertainty_mtl.weighting.base import Weighting, check_task_names

__all__ = ["FixedWeighting"]


class FixedWeighting(Weighting):
    """``sum_t w_t · L_t`` with constant weights.

    A task whose weight is 0 is not trained: calls need not contain its loss, and a loss given
    for it is ignored. A single-task model is a one-hot weighting.

    Args:
        weights: task name -> non-negative finite weight; at least one must be positive.
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    def __init__(self, weights: Mapping[str, float], *, check_finite: bool = True) -> None:
        super().__init__(check_finite=check_finite)
        if not isinstance(weights, Mapping):
            raise TypeError(f"weights must map task name -> float, got {type(weights).__name__}")
        check_task_names(weights, what="weights")
        for task, weight in weights.items():
            if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
                raise ValueError(
                    f"weight of task {task!r} must be a finite number >= 0, got {weight!r}"
                )
        self.weights: dict[str, float] = {t: float(w) for t, w in weights.items()}
        self.tasks = tuple(t for t, w in self.weights.items() if w > 0)
        self.ignored_tasks = tuple(t for t, w in self.weights.items() if w == 0)
        if not self.tasks:
            raise ValueError(f"every weight is 0, so nothing would be trained: {self.weights}")
        self.register_buffer(
            "_weights", torch.tensor([self.weights[t] for t in self.tasks]), persistent=False
        )
        self._weights: Tensor

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        loss = self._stack_losses(losses, torch.float32)
        return (self._weights.to(loss.dtype) * loss).sum()

    def effective_weights(self) -> dict[str, float]:
        return {t: self.weights[t] for t in self.tasks}

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
