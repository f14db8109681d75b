"""What every loss weighting shares: a module mapping ``{task: 0-dim loss}`` to a 0-dim total."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["NonFiniteLossError", "Weighting", "check_task_names"]


class NonFiniteLossError(ValueError):
    """A task's loss is NaN or infinite; the message names the task(s)."""


def check_task_names(names: Iterable[object], *, what: str) -> tuple[str, ...]:
    """Returns the names as a tuple, or raises ``ValueError`` if one cannot name a task.

    Task names become parameter names (``log_vars.<task>``), so they must be non-empty strings
    without dots.
    """
    tasks: list[str] = []
    for task in names:
        if not isinstance(task, str) or not task or "." in task:
            raise ValueError(
                f"{what}: task name {task!r} is not allowed; use a non-empty string without '.'"
            )
        tasks.append(task)
    if not tasks:
        raise ValueError(f"{what} is empty: give at least one task")
    return tuple(tasks)


class Weighting(nn.Module, ABC):
    """A loss weighting: ``weighting({"task": loss, ...})`` returns the weighted total.

    Subclasses set ``tasks`` (the tasks whose losses every call must contain) and implement
    ``forward`` and ``effective_weights``.

    Args:
        check_finite: if true, a non-finite task loss raises ``ValueError`` naming the task. The
            check costs one device synchronisation per call and is skipped while
            ``torch.compile`` traces the module (a data-dependent branch would break the graph).
    """

    tasks: tuple[str, ...]
    #: Tasks a call may contain in addition to ``tasks``; their losses are ignored.
    ignored_tasks: tuple[str, ...] = ()
    #: Whether a training step must call :meth:`task_gradients` between the forward and the
    #: backward pass (weightings that learn from each task's gradient, e.g. GradNorm).
    needs_task_gradients: bool = False
    #: Whether a training step must call :meth:`backward_from_features` instead of
    #: ``total.backward()`` (gradient aggregators, which combine per-task gradients).
    needs_features: bool = False

    def __init__(self, *, check_finite: bool = True) -> None:
        super().__init__()
        self.check_finite = check_finite

    @abstractmethod
    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Args:
            losses: task name -> 0-dim loss tensor (the batch mean of the task's loss).

        Returns:
            The weighted total, a 0-dim tensor.
        """

    @abstractmethod
    def effective_weights(self) -> dict[str, float]:
        """The factor on each task loss ``L_t`` in the total, ``{task: float}``."""

    def on_epoch(self, epoch: int) -> None:
        """Called by a training loop before the first step of each epoch (``epoch`` from 0), on
        every process of a distributed run; for weightings built on epoch statistics. A resumed
        run does not call it again for the epoch it resumes in: the state carries the epoch's
        statistics so far."""

    def task_gradients(
        self, losses: Mapping[str, Tensor], shared: Sequence[Tensor], *, scale: float = 1.0
    ) -> None:
        """Called by a training step, for weightings with :attr:`needs_task_gradients`, after
        the forward pass and before ``backward``: ``losses`` are the step's task losses (their
        graphs alive), ``shared`` the parameters of the network's last shared layer, ``scale``
        the factor a gradient scaler multiplies the losses by before differentiating (1 without
        one). The weighting's own update waits for :meth:`after_step`."""

    def backward_from_features(
        self, losses: Mapping[str, Tensor], features: Tensor, shared: Sequence[Tensor]
    ) -> None:
        """For weightings with :attr:`needs_features`: accumulates the step's update into the
        parameters' ``.grad`` from the task losses, the shared ``features`` they were computed
        from and the ``shared`` parameters that computed those."""
        raise NotImplementedError(f"{type(self).__name__} is updated by total.backward()")

    def after_step(self) -> None:
        """Called by a training step after the optimiser's step, on every process; for
        weightings that update their own state with their own step (GradNorm)."""

    def log_variances(self) -> dict[str, float]:
        """Learned ``s_t = log σ_t²`` per task; empty for weightings that learn nothing."""
        return {}

    def variances(self) -> dict[str, float]:
        """Learned ``σ_t² = exp(s_t)`` per task; empty for weightings that learn nothing."""
        return {}

    def log_dict(self) -> dict[str, float]:
        """Everything worth logging each step, under the keys of ``metrics.jsonl``.

        ``log_var/<task>``, ``var/<task>`` (learned weightings only) and ``weight/<task>``.
        """
        out = {f"log_var/{t}": v for t, v in self.log_variances().items()}
        out.update({f"var/{t}": v for t, v in self.variances().items()})
        out.update({f"weight/{t}": v for t, v in self.effective_weights().items()})
        return out

    def _stack_losses(
        self,
        losses: Mapping[str, Tensor],
        at_least: torch.dtype,
        present: Sequence[str] | None = None,
    ) -> Tensor:
        """Validates a call's losses and stacks them into a ``[len(present)]`` tensor, in the
        order of ``present`` (default: every task, each required).

        Its dtype is the promotion of ``at_least`` and the losses' dtypes, so half-precision
        losses from autocast are weighed in float32 and float64 losses stay float64.
        """
        tasks = list(self.tasks if present is None else present)
        if not isinstance(losses, Mapping):
            raise TypeError(
                f"{type(self).__name__} takes a mapping task name -> 0-dim loss tensor, "
                f"got {type(losses).__name__}"
            )
        allowed = set(self.tasks) | set(self.ignored_tasks)
        unknown = [t for t in losses if t not in allowed]
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown task(s) {unknown}; it weighs {list(self.tasks)}"
            )
        missing = [t for t in tasks if t not in losses]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: no loss given for task(s) {missing}; "
                f"every call needs {list(tasks)}"
            )
        for task in tasks:
            loss = losses[task]
            if not isinstance(loss, Tensor):
                raise ValueError(
                    f"loss of task {task!r} must be a tensor, got {type(loss).__name__}"
                )
            if loss.dim() != 0:
                raise ValueError(
                    f"loss of task {task!r} must be a 0-dim tensor (reduce it, e.g. with .mean()), "
                    f"got shape {list(loss.shape)}"
                )
        dtype = at_least
        for task in tasks:
            dtype = torch.promote_types(dtype, losses[task].dtype)
        stacked = torch.stack([losses[t] for t in tasks])
        if stacked.dtype != dtype:
            stacked = stacked.to(dtype)
        if self.check_finite and not torch.compiler.is_compiling():
            finite = torch.isfinite(stacked)
            if not bool(finite.all()):
                bad = [t for t, ok in zip(tasks, finite.tolist(), strict=True) if not ok]
                values = {t: float(losses[t].detach()) for t in bad}
                raise NonFiniteLossError(f"non-finite loss for task(s) {bad}: {values}")
        return stacked


def positive_losses(loss: Tensor) -> tuple[Tensor, Tensor]:
    """The mask of the positive losses, and the losses with 1 where they are not (safe to take
    the logarithm of and to divide by): a loss of exactly 0 (a scene batch without labelled
    pixels of a task) is left out by the weightings that log or invert it."""
    present = loss > 0
    return present, torch.where(present, loss, torch.ones_like(loss))


def all_reduced(value: Tensor, *, mean: bool = False) -> Tensor:
    """A copy of ``value`` summed (or averaged) over the ranks of ``torch.distributed``; the
    copy alone without it."""
    value = value.clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
        if mean:
            value /= torch.distributed.get_world_size()
    return value


def world_size() -> int:
    """The number of ``torch.distributed`` ranks (1 without it)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1
