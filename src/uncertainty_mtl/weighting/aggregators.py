"""Gradient aggregators of the methods benchmark, through torchjd.

These combine the per-task gradients of the shared parameters into one update instead of
weighing the losses: torchjd's ``mtl_backward`` differentiates each task's loss down to the
shared features (the heads get their own task's gradient as usual) and stores the Jacobian of
the shared parameters (one row per task) in their ``.jac`` fields; ``jac_to_grad`` reduces it
with the aggregator into ``.grad``. Nothing here re-implements an aggregator.

torchjd is an optional dependency: ``pip install "uncertainty-mtl[methods]"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from uncertainty_mtl.weighting.base import Weighting, check_task_names

__all__ = ["GradientAggregation"]


def _makers(tasks: int, options: Mapping[str, float]) -> dict[str, Callable[[], Any]]:
    """``weighting.kind`` -> a maker of its torchjd aggregator (the methods' names, references
    and options are in :mod:`uncertainty_mtl.weighting.registry`; ``options`` holds the
    method's own, by key, every one given: :func:`~uncertainty_mtl.weighting.registry.option_values`
    fills in the defaults)."""
    try:
        from torchjd import aggregation as A
    except ModuleNotFoundError as err:  # pragma: no cover - exercised without the extra only
        from uncertainty_mtl._install import install_command

        raise ModuleNotFoundError(
            f"the gradient aggregators need torchjd: {install_command('methods')}",
            name="torchjd",
        ) from err
    return {
        "mgda": A.MGDA,
        "pcgrad": A.PCGrad,
        "cagrad": lambda: A.CAGrad(c=options["c"]),
        "nash-mtl": lambda: A.NashMTL(n_tasks=tasks),
        "imtl-g": A.IMTLG,
        "aligned-mtl": A.AlignedMTL,
        "upgrad": A.UPGrad,
        "fairgrad": lambda: A.FairGrad(alpha=options["alpha"]),
        "dualproj": A.DualProj,
        "gradvac": lambda: A.GradVac(beta=options["beta"]),
        "config": A.ConFIG,
        "db-mtl": lambda: _dual_balancing(A.Aggregator)(options["beta"], options["beta_sigma"]),
    }


#: The aggregators whose rows are the gradients of ``log L_t`` instead of ``L_t``.
_OF_LOG_LOSSES = ("db-mtl",)
#: What an aggregator carries from step to step in plain attributes (outside its buffers), by
#: kind, each by its dotted path from the aggregator: Nash-MTL's step count, last weights and
#: scale (its solver warm-starts from them), DB-MTL's step count and averaged gradients.
_CARRIED = {
    "nash-mtl": ("weighting.step", "weighting.prvs_alpha", "weighting.normalization_factor"),
    "db-mtl": ("steps", "buffer", "weights"),
}


def _dual_balancing(base: type) -> type:
    """DB-MTL's gradient balancing (Lin et al., 2023) as a torchjd aggregator: the rows (the
    gradients of ``log L_t``) are averaged over steps, ``b_t ← g_t + β_k·(b_t − g_t)`` with
    ``β_k = β / k^σ`` from ``b = 0``, and combined as ``sum_t (max_j ‖b_j‖ / ‖b_t‖)·b_t``: every
    task's averaged gradient is scaled to the largest norm. torchjd does not ship it; the
    hand-computation test checks it."""

    class DualBalancing(base):  # type: ignore[misc]
        def __init__(self, beta: float, beta_sigma: float) -> None:
            super().__init__()
            self.beta, self.beta_sigma = beta, beta_sigma
            self.steps = 0
            self.buffer: Tensor | None = None
            self.weights: Tensor | None = None  # max_j ‖b_j‖ / ‖b_t‖ of the last call

        def forward(self, matrix: Tensor) -> Tensor:
            self.steps += 1
            if self.buffer is None or self.buffer.shape != matrix.shape:
                self.buffer = torch.zeros_like(matrix)
            rate = self.beta / self.steps**self.beta_sigma
            self.buffer = matrix + rate * (self.buffer - matrix)
            norms = self.buffer.norm(dim=1)
            self.weights = norms.max() / (norms + 1e-8)
            return self.weights @ self.buffer

    return DualBalancing


class GradientAggregation(Weighting):
    """A torchjd aggregator in the place of a loss weighting.

    ``weighting(losses)`` returns the plain sum of the losses (what is logged and checked for
    finiteness); the update comes from :meth:`backward_from_features`, which a training step
    calls instead of ``total.backward()`` (:attr:`needs_features`). The effective weights are
    those of the
    Jacobian's rows in the last update (torchjd gives each of these aggregators as a weighting
    of the rows; 1 before the first update).

    Args:
        tasks: the task names.
        kind: an aggregator's ``weighting.kind`` (``mgda``, ``pcgrad``, ``cagrad``, ...; see
            :data:`~uncertainty_mtl.weighting.registry.METHODS`).
        options: the method's own hyper-parameters by key (CAGrad's ``c``, FairGrad's
            ``alpha``, GradVac's ``beta``, DB-MTL's ``beta`` and ``beta_sigma``), every one the
            method has: ``weighting.registry.build_method`` (or ``option_values``) fills in the
            defaults, which are written there only.
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    needs_features = True

    def __init__(
        self,
        tasks: Iterable[str],
        kind: str,
        *,
        options: Mapping[str, float] | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(check_finite=check_finite)
        self.tasks = check_task_names(tasks, what="tasks")
        makers = _makers(len(self.tasks), options or {})
        if kind not in makers:
            raise ValueError(f"unknown aggregator {kind!r}; expected one of {list(makers)}")
        self.kind = kind
        try:
            self.aggregator = makers[kind]()
        except KeyError as err:
            raise ValueError(
                f"aggregator {kind!r} needs its option {err.args[0]!r}: pass options=, or build "
                "it with weighting.registry.build_method, which fills in the defaults"
            ) from None
        self._last = dict.fromkeys(self.tasks, 1.0)
        self._exposed = False  # whether the aggregator has given its weights (ConFIG never does)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        return self._stack_losses(losses, torch.float32).sum()

    def backward_from_features(
        self, losses: Mapping[str, Tensor], features: Tensor, shared: Sequence[Tensor]
    ) -> None:
        """Accumulates the update into ``.grad``: the heads' own gradients, and the aggregated
        Jacobian of the ``shared`` parameters (those that compute ``features``)."""
        from torchjd.autojac import jac_to_grad, mtl_backward

        self._stack_losses(losses, torch.float32)  # checks the tasks
        shared = [p for p in shared if p.requires_grad]
        rows = [losses[t] for t in self.tasks]
        if self.kind in _OF_LOG_LOSSES:
            rows = [loss.clamp(min=1e-30).log() for loss in rows]
        mtl_backward(rows, features=features, shared_params=shared)
        with warnings.catch_warnings():
            # cvxpy's remarks at every step: CAGrad's problem is not DPP (a speed note), and
            # Nash-MTL's inner solver may stop inexact (it keeps its last weights then)
            warnings.filterwarnings("ignore", message=".*not DPP", category=UserWarning)
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            # and cvxpy's numpy warnings when Nash-MTL's problem meets a zero entry of G·α
            # (a task whose gradient has vanished): its weights then stay as they were
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="cvxpy")
            weights = jac_to_grad(shared, self.aggregator)
        if weights is None:
            weights = getattr(self.aggregator, "weights", None)  # our own aggregators'
        if weights is not None:
            values = weights.detach().reshape(-1).float().tolist()
            self._last = dict(zip(self.tasks, values, strict=True))
            self._exposed = True

    def effective_weights(self) -> dict[str, float]:
        """The weights the aggregator gave the task gradients at the last step (1 each before
        the first step, and for an aggregator that does not expose them)."""
        return dict(self._last)

    def log_dict(self) -> dict[str, float]:
        """As every weighting's, without ``weight/<task>`` where the aggregator has not exposed
        its weights (ConFIG): there are none to log."""
        out = super().log_dict()
        if not self._exposed:
            out = {k: v for k, v in out.items() if not k.startswith("weight/")}
        return out

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, kind={self.kind!r}"

    # -- state: a resumed run goes on as an uninterrupted one -------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """The weights of the last step and what the aggregator carries to the next
        (:data:`_CARRIED`; NumPy arrays as tensors)."""
        import numpy as np  # torchjd's own dependency

        carried = {}
        for name in _CARRIED.get(self.kind, ()):
            value = getattr(*self._owner(name))
            carried[name] = (
                torch.from_numpy(value.copy()) if isinstance(value, np.ndarray) else value
            )
        return {"last": dict(self._last), "exposed": self._exposed, "aggregator": carried}

    def set_extra_state(self, state: dict[str, Any] | None) -> None:
        if state is None:  # a checkpoint from before this state was kept
            return
        import numpy as np

        self._last, self._exposed = dict(state["last"]), bool(state["exposed"])
        for name, value in state["aggregator"].items():
            owner, attribute = self._owner(name)
            if isinstance(getattr(owner, attribute), np.ndarray):
                value = value.numpy()
            setattr(owner, attribute, value)
        nash = self.aggregator.weighting if self.kind == "nash-mtl" else None
        if nash is not None and nash.step > 0:
            nash._init_optim_problem()  # the solver's problem, which it builds at its first step

    def _owner(self, path: str) -> tuple[Any, str]:
        """The object and the attribute name at ``path`` (dotted) from the aggregator."""
        *parents, attribute = path.split(".")
        owner = self.aggregator
        for parent in parents:
            owner = getattr(owner, parent)
        return owner, attribute

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
        extra = prefix + "_extra_state"
        if extra not in state_dict:
            state_dict = {**state_dict, extra: None}
        # A buffer an aggregator makes at its first step (GradVac's φ) is made here to the
        # saved one's measure, so that loading fills it; its key in the aggregator follows it.
        for path, module in self.aggregator.named_modules():
            for name, buffer in list(module._buffers.items()):
                key = ".".join(filter(None, (f"{prefix}aggregator", path, name)))
                if buffer is None and key in state_dict:
                    module._buffers[name] = torch.empty_like(state_dict[key])
                    if name == "_phi_t":
                        module._state_key = (state_dict[key].shape[0], state_dict[key].dtype)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
