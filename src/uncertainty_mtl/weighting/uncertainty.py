"""Weighting by learned homoscedastic (task) uncertainty, Kendall, Gal & Cipolla (CVPR 2018).

Each task ``t`` has a learned ``s_t = log σ_t²`` and adds a term chosen by its likelihood. A loss
that sums ``d`` scalars per element (``event_dims``; the instance loss ``|dx| + |dy|`` has
``d = 2``) is ``d`` observations per element, each with the task's σ, so its penalty is
``(d/2)·s``:

============  ==============================  ======================  ==================
likelihood    term added to the total          minimiser, fixed ``L``  weight on ``L``
============  ==============================  ======================  ==================
gaussian      ``0.5·exp(-s)·L + (d/2)·s``      ``s* = log(L/d)``       ``0.5·exp(-s)``
laplace       ``exp(-0.5·s)·L + (d/2)·s``      ``s* = 2·log(L/d)``     ``exp(-0.5·s)``
softmax       ``exp(-s)·L + 0.5·s``            ``s* = log(2L)``        ``exp(-s)``
============  ==============================  ======================  ==================

``gaussian`` is the negative log-likelihood of a Gaussian with variance ``σ²`` for a squared-error
loss, ``laplace`` that of a Laplace distribution with scale ``σ`` for an absolute-error loss, and
``softmax`` the paper's approximation (its eq. 10) for a cross-entropy loss (one event per pixel).
Constants are dropped.

``tempered_softmax`` is the exact likelihood the approximation stands for, kept as an ablation: the
task's loss must be the cross-entropy of ``logits · exp(-s)`` (take the factor from
:meth:`UncertaintyWeighting.logit_scale`), and the term is that loss alone, with no penalty (the
softmax is normalised, so nothing else keeps ``s`` in check).

Two variants reproduce other work: ``convention="paper"`` is the paper's formula as printed, the
Gaussian term with ``0.5·s`` for every regression task whatever its loss and ``d``;
``regulariser="positive"`` is Liebel & Körner (2018) exactly, ``0.5·exp(-s)·L + log(1 + exp(s))``
for every task whatever its likelihood (a ``tempered_softmax`` task keeps its own form).

The total can be negative: ``0.5·s`` is negative as soon as ``σ² < 1``, which happens whenever a
task is fitted well (``L`` small). It is a negative log-likelihood up to a constant, not a
distance, so only its gradient matters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uncertainty_mtl.weighting.base import Weighting, all_reduced, check_task_names, world_size

__all__ = [
    "CONVENTIONS",
    "LIKELIHOODS",
    "REGULARISERS",
    "UncertaintyWeighting",
    "optimal_log_variance",
]

#: likelihood -> (a, b) of the weighted term ``a·exp(-b·s)·L``.
_TERM_FORM: Final[dict[str, tuple[float, float]]] = {
    "gaussian": (0.5, 1.0),
    "laplace": (1.0, 0.5),
    "softmax": (1.0, 1.0),
    "tempered_softmax": (1.0, 0.0),  # the loss carries s itself; no penalty
}
LIKELIHOODS: Final = tuple(_TERM_FORM)
CONVENTIONS: Final = ("likelihood", "paper")
REGULARISERS: Final = ("log", "positive")


class UncertaintyWeighting(Weighting):
    """Weighs task losses by learned homoscedastic uncertainty, one likelihood per task.

    The only parameter is ``log_vars``, the float32 vector of the ``s_t`` in the order of
    ``tasks`` (one tensor, not one per task: an optimiser step costs per tensor). The state dict
    also records the task names, so a checkpoint loads by name into a weighting that lists the
    same tasks in another order, and fails, naming the tasks, into one with other tasks. Give the
    log-variances their own optimiser group without weight decay: :func:`parameter_groups`.

    Args:
        likelihoods: task name -> ``"gaussian"`` (MSE loss), ``"laplace"`` (L1 loss) or
            ``"softmax"`` (cross-entropy). Declared, never guessed from the loss.
        init_log_var: initial ``s``, one float for every task or a mapping task -> float (tasks
            it leaves out start at 0.0), or ``"auto"``: each task's ``s`` is set, at the first
            training call that gives it a positive loss, to the optimum of its term for that
            loss (:func:`optimal_log_variance`; under ``torch.distributed`` the loss averaged
            over the ranks, so every rank starts alike), whatever the loss's scale. Needs the
            ``log`` regulariser; a ``tempered_softmax`` task starts at 0.
        event_dims: task name -> ``d``, the scalars its loss sums per element (default 1 for
            every task; the scene instance loss ``|dx| + |dy|`` has 2). The penalty is
            ``(d/2)·s``. Only ``gaussian`` and ``laplace`` tasks may have ``d > 1``.
        convention: ``"likelihood"`` uses each task's own term; ``"paper"`` uses the Gaussian
            term with ``0.5·s`` for every regression task, whatever its loss and ``d`` (the
            paper's formula as printed, and what most public code does, also for L1 losses);
            ``softmax`` is the same in both.
        regulariser: ``"log"`` adds ``(d/2)·s`` (= ``d·log σ``); ``"positive"`` is Liebel &
            Körner (2018) exactly: ``0.5·exp(-s)·L + log(1 + exp(s))`` for every task whatever
            its likelihood and ``d``, which keeps the total positive.
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
        missing: ``"error"`` (default): every call gives every task's loss. ``"skip"``: a call
            may leave out tasks (real data sets label different tasks in different images); a
            left-out task adds nothing and its ``s`` gets no gradient that call. Under
            ``torch.distributed`` every rank must then call it each step (it all-reduces which
            tasks each rank has): a task present on ``k`` of ``W`` ranks has its term scaled by
            ``W/k`` where present, so DDP's average over ranks equals one process over the
            ranks' batches together.

    Example:
        >>> import torch
        >>> weighting = UncertaintyWeighting({"semantic": "softmax", "depth": "laplace"})
        >>> total = weighting({"semantic": torch.tensor(0.7), "depth": torch.tensor(0.2)})
        >>> round(total.item(), 4)  # s = 0: exp(0)·0.7 + 0 + exp(0)·0.2 + 0
        0.9
    """

    def __init__(
        self,
        likelihoods: Mapping[str, str],
        *,
        init_log_var: float | Mapping[str, float] | str = 0.0,
        event_dims: Mapping[str, int] | None = None,
        convention: str = "likelihood",
        regulariser: str = "log",
        check_finite: bool = True,
        missing: str = "error",
    ) -> None:
        super().__init__(check_finite=check_finite)
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
        self.missing = missing
        if not isinstance(likelihoods, Mapping):
            raise TypeError(
                "likelihoods must map task name -> likelihood, e.g. "
                f"{{'semantic': 'softmax'}}; got {type(likelihoods).__name__}"
            )
        self.tasks = check_task_names(likelihoods, what="likelihoods")
        for task, likelihood in likelihoods.items():
            if likelihood not in _TERM_FORM:
                raise ValueError(
                    f"task {task!r}: unknown likelihood {likelihood!r}; "
                    f"expected one of {list(LIKELIHOODS)}"
                )
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")
        if regulariser not in REGULARISERS:
            raise ValueError(
                f"regulariser must be one of {list(REGULARISERS)}, got {regulariser!r}"
            )
        self.likelihoods: dict[str, str] = dict(likelihoods)
        self.convention = convention
        self.regulariser = regulariser
        self.event_dims = _event_dims(event_dims, self.likelihoods)

        auto = isinstance(init_log_var, str)
        if auto and init_log_var != "auto":
            raise ValueError(
                f"init_log_var must be a number, a mapping or 'auto', got {init_log_var!r}"
            )
        if auto and regulariser != "log":
            raise ValueError(
                "init_log_var='auto' needs regulariser='log' (the closed-form optimum)"
            )
        inits = _per_task_init(0.0 if auto else init_log_var, self.tasks)  # type: ignore[arg-type]
        # float32 whatever torch's default dtype: the state is the same in every program.
        self.log_vars = nn.Parameter(
            torch.tensor([inits[t] for t in self.tasks], dtype=torch.float32)
        )
        self.index = {t: i for i, t in enumerate(self.tasks)}
        forms = [_TERM_FORM[self.term_likelihood(t)] for t in self.tasks]
        # The factor on the penalty: d/2 on s (log), 1 on softplus(s) (positive), 0 (tempered).
        self.register_buffer(
            "_penalty",
            torch.tensor([self.penalty_factor(t) for t in self.tasks], dtype=torch.float64),
            persistent=False,
        )
        self._penalty: Tensor
        # a·exp(-b·s) is computed as exp(log a - b·s): two autograd nodes instead of four.
        # Buffers, so that the constants follow the module's device; float64, so that log a is
        # exact whatever precision the losses come in (they are cast to it in forward).
        self.register_buffer(
            "_log_scale",
            torch.tensor([math.log(a) for a, _ in forms], dtype=torch.float64),
            persistent=False,
        )
        self.register_buffer(
            "_neg_rate", torch.tensor([-b for _, b in forms], dtype=torch.float64), persistent=False
        )
        self._log_scale: Tensor
        self._neg_rate: Tensor
        # init_log_var="auto": the tasks whose s waits for its first positive loss (saved, so a
        # resumed run does not set it again).
        pending = [auto and self.likelihoods[t] != "tempered_softmax" for t in self.tasks]
        self.register_buffer("_auto_pending", torch.tensor(pending), persistent=auto)
        self._auto_pending: Tensor
        self._auto_active = any(pending)  # a Python flag: no data-dependent branch otherwise

    def term_likelihood(self, task: str) -> str:
        """The likelihood whose term ``task`` adds, after applying the convention and the
        regulariser (both ``paper`` and ``positive`` use the Gaussian form)."""
        likelihood = self.likelihoods[task]
        if likelihood == "tempered_softmax":
            return likelihood
        if self.regulariser == "positive":
            return "gaussian"
        if self.convention == "paper" and likelihood != "softmax":
            return "gaussian"
        return likelihood

    def penalty_factor(self, task: str) -> float:
        """The factor on the task's penalty: ``d/2`` on ``s`` (``log``; ``1/2`` under the
        ``paper`` convention), ``1`` on ``log(1 + exp(s))`` (``positive``), ``0`` for a
        ``tempered_softmax`` task."""
        if self.likelihoods[task] == "tempered_softmax":
            return 0.0
        if self.regulariser == "positive":
            return 1.0
        if self.convention == "paper":
            return 0.5
        return 0.5 * self.event_dims[task]

    def logit_scale(self, task: str) -> Tensor:
        """``exp(-s)`` of a ``tempered_softmax`` task, to multiply its logits by (0-dim, with
        gradient)."""
        if self.likelihoods.get(task) != "tempered_softmax":
            raise ValueError(f"task {task!r} is not a tempered_softmax task")
        return torch.exp(-self.log_var(task))

    def log_var(self, task: str) -> Tensor:
        """``s`` of one task, a 0-dim view of ``log_vars`` (differentiable)."""
        return self.log_vars[self.index[task]]

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        # At least float32: under autocast the losses may arrive in half precision.
        at_least = torch.promote_types(self.log_vars.dtype, torch.float32)
        if self.missing == "skip":
            return self._forward_present(losses, at_least)
        loss = self._stack_losses(losses, at_least)
        if self.training and self._auto_active:
            self._start_at_optimum(loss, torch.arange(len(self.tasks), device=loss.device))
        return self._terms(loss, slice(None)).sum()

    @torch.no_grad()
    def _start_at_optimum(self, loss: Tensor, index: Tensor) -> None:
        """``init_log_var="auto"``: the pending tasks among ``index`` with a positive loss (mean
        over the ranks) start at their term's optimum ``log(a·b·L/p)/b``."""
        mean = all_reduced(loss.detach().double(), mean=True)
        a, b = self._log_scale[index].double().exp(), -self._neg_rate[index].double()
        penalty = self._penalty[index].double()
        due = self._auto_pending[index] & (mean > 0) & (penalty > 0)
        optimum = torch.log(a * b * mean.clamp(min=1e-300) / penalty.clamp(min=1e-300)) / b
        self.log_vars[index] = torch.where(due, optimum.float(), self.log_vars[index])
        self._auto_pending[index] &= ~due
        self._auto_active = bool(self._auto_pending.any())

    def _terms(self, loss: Tensor, index: slice | Tensor) -> Tensor:
        """Each task's term, for the tasks ``index`` picks out of ``tasks`` (``loss`` in that
        order)."""
        s = self.log_vars[index].to(loss.dtype)
        log_scale = self._log_scale[index].to(loss.dtype)
        weight = torch.exp(torch.addcmul(log_scale, s, self._neg_rate[index].to(loss.dtype)))
        regularised = s if self.regulariser == "log" else F.softplus(s)
        return torch.addcmul(regularised * self._penalty[index].to(loss.dtype), weight, loss)

    def _forward_present(self, losses: Mapping[str, Tensor], at_least: torch.dtype) -> Tensor:
        """``missing="skip"``: the terms of the tasks given, each scaled by ``W/k`` (the ranks,
        and how many of them have the task this step; 1 in one process)."""
        present = [t for t in self.tasks if t in losses]
        device = self.log_vars.device
        mask = torch.tensor([t in losses for t in self.tasks], dtype=torch.float32, device=device)
        counts = all_reduced(mask)  # every rank, every call: the collective must match
        if not present:
            return self.log_vars.sum() * 0.0  # no term; zero gradients, still in the graph
        loss = self._stack_losses(losses, at_least, present)
        index = torch.tensor([self.index[t] for t in present], device=device)
        if self.training and self._auto_active:
            self._start_at_optimum(loss, index)  # every rank, every call (it all-reduces)
        scale = (world_size() / counts[index]).to(loss.dtype)
        return (self._terms(loss, index) * scale).sum()

    @torch.no_grad()
    def effective_weights(self) -> dict[str, float]:
        s = self.log_vars.double()
        weights = torch.exp(self._log_scale.double() + self._neg_rate.double() * s)
        return dict(zip(self.tasks, weights.tolist(), strict=True))

    @torch.no_grad()
    def log_variances(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.log_vars.float().tolist(), strict=True))

    @torch.no_grad()
    def variances(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.log_vars.float().exp().tolist(), strict=True))

    def extra_repr(self) -> str:
        dims = {t: d for t, d in self.event_dims.items() if d != 1}
        missing = f", missing={self.missing!r}" if self.missing != "error" else ""
        return (
            f"likelihoods={self.likelihoods}, event_dims={dims}, "
            f"convention={self.convention!r}, regulariser={self.regulariser!r}{missing}"
        )

    def get_extra_state(self) -> dict[str, list[str]]:
        return {"tasks": list(self.tasks)}

    def set_extra_state(self, state: dict[str, list[str]]) -> None:
        """Checked and applied in :meth:`_load_from_state_dict`, before any value is copied."""

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        pending = prefix + "_auto_pending"  # in the state of an init_log_var="auto" weighting
        if "_auto_pending" in self._non_persistent_buffers_set:
            state_dict = {k: v for k, v in state_dict.items() if k != pending}
        elif pending not in state_dict and prefix + "log_vars" in state_dict:
            # a state without it: its run had started, nothing is pending
            state_dict = {**state_dict, pending: torch.zeros(len(self.tasks), dtype=torch.bool)}
        extra = state_dict.get(prefix + "_extra_state")
        key = prefix + "log_vars"
        if isinstance(extra, dict) and "tasks" in extra and key in state_dict:
            saved = list(extra["tasks"])
            if sorted(saved) != sorted(self.tasks):
                error_msgs.append(
                    f"{prefix or 'UncertaintyWeighting'}: the state dict holds log-variances of "
                    f"tasks {saved}, this weighting has tasks {list(self.tasks)}"
                )
                return
            if saved != list(self.tasks):  # same tasks, other order: match by name
                state_dict = dict(state_dict)
                order = [saved.index(t) for t in self.tasks]
                state_dict[key] = state_dict[key][order]
                if pending in state_dict:
                    state_dict[pending] = state_dict[pending][order]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._auto_active = bool(self._auto_pending.any())


def optimal_log_variance(likelihood: str, loss: float, event_dims: int = 1) -> float:
    """The ``s`` minimising a task's term (``log`` regulariser) for a fixed loss ``L > 0``.

    ``log(L/d)`` (gaussian), ``2·log(L/d)`` (laplace), ``log 2L`` (softmax, ``d = 1``). At this
    ``s`` the effective weight is ``d/(2L)``, ``d/L`` and ``1/(2L)`` respectively: the gradient
    reaching the network is that of ``log L`` up to a constant factor, whatever the loss's units.
    """
    if likelihood not in ("gaussian", "laplace", "softmax"):
        raise ValueError(
            f"no closed-form optimum for likelihood {likelihood!r}; "
            "expected gaussian, laplace or softmax"
        )
    if not loss > 0:
        raise ValueError(f"the optimum exists for a positive loss only, got {loss}")
    _event_dims({"task": event_dims}, {"task": likelihood})
    scale, rate = _TERM_FORM[likelihood]
    # d/ds [scale·exp(-rate·s)·L + (d/2)·s] = 0  <=>  s = log(2·scale·rate·L/d) / rate
    return math.log(2.0 * scale * rate * loss / event_dims) / rate


def _event_dims(dims: Mapping[str, int] | None, likelihoods: Mapping[str, str]) -> dict[str, int]:
    dims = dict(dims or {})
    unknown = [t for t in dims if t not in likelihoods]
    if unknown:
        raise ValueError(
            f"event_dims names unknown task(s) {unknown}; tasks are {list(likelihoods)}"
        )
    for task, d in dims.items():
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"event_dims of task {task!r} must be an integer >= 1, got {d!r}")
        if d != 1 and likelihoods[task] not in ("gaussian", "laplace"):
            raise ValueError(
                f"event_dims of task {task!r} must be 1: a {likelihoods[task]} task has one "
                f"event per element (only gaussian and laplace tasks sum several), got {d}"
            )
    return {t: dims.get(t, 1) for t in likelihoods}


def _per_task_init(init: float | Mapping[str, float], tasks: tuple[str, ...]) -> dict[str, float]:
    if isinstance(init, Mapping):
        unknown = [t for t in init if t not in tasks]
        if unknown:
            raise ValueError(
                f"init_log_var names unknown task(s) {unknown}; tasks are {list(tasks)}"
            )
        values = {t: float(init.get(t, 0.0)) for t in tasks}
    else:
        values = dict.fromkeys(tasks, float(init))
    for task, value in values.items():
        if not torch.isfinite(torch.tensor(value)):
            raise ValueError(f"init_log_var of task {task!r} must be finite, got {value}")
    return values
