"""Loss weightings that undo each loss's scale: the scale-invariant sum of log-losses
(``si``), analytical uncertainty weighting (``uw-so``) and FAMO (``famo``).

Each is a :class:`~uncertainty_mtl.weighting.base.Weighting`: ``weighting({task: loss}) ->
total``, its state in ``state_dict``. A loss of exactly 0 (a scene batch without labelled
pixels of a task) has no logarithm and no inverse: such a task gets weight 0 for that call, as
in :class:`~uncertainty_mtl.weighting.methods.GeometricWeighting`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor
from torch.optim.adam import adam

from uncertainty_mtl.weighting.base import (
    Weighting,
    all_reduced,
    check_task_names,
    positive_losses,
)

__all__ = ["FAMO", "AnalyticalUncertaintyWeighting", "ScaleInvariantWeighting"]


class ScaleInvariantWeighting(Weighting):
    """``si``: ``sum_t log L_t`` (the scale-invariant baseline of Navon et al., ICML 2022).

    Its gradient is ``sum_t ∇L_t / L_t``: the effective weight of a task is ``1/L_t``, so
    multiplying a loss by any constant changes nothing. It is the direction that IMTL-L and the
    uncertainty weighting reach at their equilibrium, at unit scale.

    Args:
        tasks: the task names.
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    def __init__(self, tasks: Iterable[str], *, check_finite: bool = True) -> None:
        super().__init__(check_finite=check_finite)
        self.tasks = check_task_names(tasks, what="tasks")
        self._last = torch.ones(len(self.tasks))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        loss = self._stack_losses(losses, torch.float32)
        present, safe = positive_losses(loss)
        self._last = torch.where(present, 1.0 / safe.detach(), 0.0)
        return torch.where(present, safe.log(), loss * 0).sum()

    def effective_weights(self) -> dict[str, float]:
        """``1/L_t`` at the last call (1 before the first)."""
        return dict(zip(self.tasks, self._last.float().tolist(), strict=True))


class AnalyticalUncertaintyWeighting(Weighting):
    """``uw-so``, analytical uncertainty weighting (Kirchdorfer et al., 2024):
    ``sum_t w_t·L_t`` with ``w = T·softmax((1/L)/τ)`` on the detached losses.

    It takes the uncertainty weighting's optimum, a weight ∝ ``1/L_t``, in closed form at every
    step instead of learning it, and sharpens or flattens it with the temperature ``τ``. Under
    ``torch.distributed`` the losses are averaged over the ranks first, so every rank uses the
    same weights.

    Args:
        tasks: the task names.
        temperature: ``τ`` (> 0); large ``τ`` tends to equal weights.
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    def __init__(
        self, tasks: Iterable[str], *, temperature: float = 1.0, check_finite: bool = True
    ) -> None:
        super().__init__(check_finite=check_finite)
        self.tasks = check_task_names(tasks, what="tasks")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.temperature = temperature
        self._last = torch.ones(len(self.tasks))

    def weights(self, loss: Tensor) -> Tensor:
        """``T·softmax((1/L)/τ)`` over the tasks with a positive loss (0 for the others)."""
        present, safe = positive_losses(all_reduced(loss.detach().float(), mean=True))
        logits = torch.where(present, 1.0 / (safe * self.temperature), -torch.inf)
        if not bool(present.any()):
            return torch.zeros_like(loss)
        return (len(self.tasks) * torch.softmax(logits, dim=0)).to(loss.dtype)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        loss = self._stack_losses(losses, torch.float32)
        weights = self.weights(loss)
        self._last = weights.detach()
        return (weights * loss).sum()

    def effective_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self._last.float().tolist(), strict=True))

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, temperature={self.temperature}"


class FAMO(Weighting):
    """FAMO, fast adaptive multitask optimisation (Liu et al., NeurIPS 2023).

    The total is ``sum_t z_t·log L_t / c`` with ``z = softmax(ξ)`` and ``c = sum_t z_t / L_t``
    (detached), so task ``t`` gets the effective weight ``z_t / (c·L_t)`` (they sum to 1). The
    logits ``ξ`` learn to make the log-losses fall at equal rates: after each step, with
    ``δ_t = log L_t(before) − log L_t(after)``, ``ξ`` takes an Adam step (``weight_lr``, weight
    decay ``gamma``) along the gradient ``J_softmax(ξ)ᵀ δ``.

    Departure from the authors' code: "after" is the next training call's losses (the next
    batch) instead of a second forward pass over the same batch after the step, which would cost
    a forward pass per step; the minimum losses are 0, as in their default. The Adam step is
    torch's functional ``adam`` on state kept in buffers, so ``state_dict`` holds it. Under
    ``torch.distributed`` the log-losses are averaged over the ranks, so every rank keeps the
    same ``ξ``.

    Args:
        tasks: the task names.
        weight_lr: the Adam learning rate of ``ξ`` (0.025 in the paper).
        gamma: the weight decay of ``ξ`` (0.01 in the authors' code, 0.001 in some of their
            experiments).
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    def __init__(
        self,
        tasks: Iterable[str],
        *,
        weight_lr: float = 0.025,
        gamma: float = 0.01,
        check_finite: bool = True,
    ) -> None:
        super().__init__(check_finite=check_finite)
        self.tasks = check_task_names(tasks, what="tasks")
        for name, value in (("weight_lr", weight_lr), ("gamma", gamma)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        self.weight_lr, self.gamma = weight_lr, gamma
        n = len(self.tasks)
        for name in ("logits", "exp_avg", "exp_avg_sq", "previous"):
            self.register_buffer(name, torch.zeros(n, dtype=torch.float32))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.float32))
        self.register_buffer("has_previous", torch.zeros((), dtype=torch.bool))
        self.logits: Tensor
        self.exp_avg: Tensor
        self.exp_avg_sq: Tensor
        self.previous: Tensor
        self.adam_step: Tensor
        self.has_previous: Tensor
        self._last = torch.full((n,), 1.0 / n)

    @torch.no_grad()
    def update(self, log_loss: Tensor) -> None:
        """One step of ``ξ`` from the previous call's log-losses to ``log_loss`` (then kept as
        the previous ones)."""
        if bool(self.has_previous):
            delta = self.previous - log_loss
            z = torch.softmax(self.logits, dim=0)
            grad = z * delta - z * (z @ delta)  # J_softmax(ξ)ᵀ δ, J = diag(z) − z zᵀ
            adam(
                [self.logits],
                [grad],
                [self.exp_avg],
                [self.exp_avg_sq],
                [],
                [self.adam_step],
                amsgrad=False,
                beta1=0.9,
                beta2=0.999,
                lr=self.weight_lr,
                weight_decay=self.gamma,
                eps=1e-8,
                maximize=False,
            )
        self.previous.copy_(log_loss)
        self.has_previous.fill_(True)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        loss = self._stack_losses(losses, torch.float32)
        present, safe = positive_losses(loss)
        if self.training and torch.is_grad_enabled() and bool(present.all()):
            self.update(all_reduced(safe.detach().float().log(), mean=True))
        z = torch.softmax(self.logits, dim=0).to(loss.dtype) * present
        c = (z / safe).sum().detach()
        self._last = (z / (c * safe)).detach()
        return (z * torch.where(present, safe.log(), loss * 0)).sum() / c

    def effective_weights(self) -> dict[str, float]:
        """``z_t / (c·L_t)`` at the last call (``1/T`` before the first)."""
        return dict(zip(self.tasks, self._last.float().tolist(), strict=True))

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, weight_lr={self.weight_lr}, gamma={self.gamma}"
