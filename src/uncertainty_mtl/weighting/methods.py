"""Other loss weightings of the methods benchmark: the geometric mean (GLS), random
weights (RLW), IMTL's learned loss scales (IMTL-L), dynamic weight average (DWA, which needs
the training loop's ``on_epoch`` call) and GradNorm (which needs its ``task_gradients`` and
``after_step`` calls).

Each is a :class:`~uncertainty_mtl.weighting.base.Weighting`: ``weighting({task: loss}) -> total``,
its state in ``state_dict``. ``equal`` is ``FixedWeighting`` with every weight 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from uncertainty_mtl.weighting.base import (
    Weighting,
    all_reduced,
    check_task_names,
    positive_losses,
)

__all__ = [
    "DynamicWeightAverage",
    "GeometricWeighting",
    "GradNorm",
    "IMTLLossWeighting",
    "RandomWeighting",
]


def _check_number(
    name: str, value: float, *, above: float | None = None, at_least: float | None = None
) -> None:
    """A ``ValueError`` naming ``name`` unless ``value`` is finite, ``> above`` and
    ``>= at_least`` (where given)."""
    if not (
        math.isfinite(value)
        and (above is None or value > above)
        and (at_least is None or value >= at_least)
    ):
        bound = f" > {above:g}" if above is not None else ""
        bound += f" >= {at_least:g}" if at_least is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value}")


class GeometricWeighting(Weighting):
    """GLS, the geometric loss strategy (Chennupati et al., CVPRW 2019): ``(prod_t L_t)^(1/T)``.

    Its gradient puts the weight ``total / (T·L_t)`` on each task: the smaller a loss, the more
    it counts, and no unit of any loss matters (scaling ``L_t`` by ``c`` scales the total by
    ``c^(1/T)`` and leaves every direction unchanged).

    A loss of exactly 0 (our scene losses are 0 for a batch without labelled pixels of their
    task) would make the total 0 and its gradient 0·∞: such a task is left out of that call's
    mean, which is then over the other tasks (all 0: the total is 0).

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
        count = present.sum()
        logs = torch.where(present, safe.log(), torch.zeros_like(loss))
        mean_log = logs.sum() / count.clamp(min=1)
        total = torch.where(count > 0, mean_log.exp(), loss.sum() * 0)
        # Kept on the device; read (one synchronisation) only when logged.
        self._last = torch.where(present, total.detach() / (count * safe), 0.0).detach()
        return total

    def effective_weights(self) -> dict[str, float]:
        """``∂total/∂L_t = total / (T·L_t)`` at the last call (1 before the first)."""
        return dict(zip(self.tasks, self._last.float().tolist(), strict=True))


class RandomWeighting(Weighting):
    """RLW, random loss weighting (Lin et al., TMLR 2022): ``sum_t w_t·L_t`` with
    ``w = softmax(z)``, ``z ~ N(0, I)`` drawn anew at every training call.

    The draws come from the module's own generator (seeded by ``seed``), so the global random
    state is untouched, every DDP rank draws the same weights, and the generator's state is part
    of ``state_dict``: a resumed run draws what an uninterrupted one would have. In eval mode the
    weights are their expectation ``1/T`` and nothing is drawn.

    Args:
        tasks: the task names.
        seed: seed of the weights' generator.
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    def __init__(self, tasks: Iterable[str], *, seed: int = 0, check_finite: bool = True) -> None:
        super().__init__(check_finite=check_finite)
        self.tasks = check_task_names(tasks, what="tasks")
        self.generator = torch.Generator().manual_seed(seed)
        self._last = dict.fromkeys(self.tasks, 1.0 / len(self.tasks))

    def draw(self) -> Tensor:
        """The next weights, ``softmax(z)`` of a standard normal ``z`` (float32, CPU)."""
        z = torch.randn(len(self.tasks), generator=self.generator, dtype=torch.float32)
        return torch.softmax(z, dim=0)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        loss = self._stack_losses(losses, torch.float32)
        if self.training:
            weights = self.draw()
        else:
            weights = torch.full((len(self.tasks),), 1.0 / len(self.tasks))
        self._last = dict(zip(self.tasks, weights.tolist(), strict=True))
        return (weights.to(device=loss.device, dtype=loss.dtype) * loss).sum()

    def effective_weights(self) -> dict[str, float]:
        """The weights of the last call."""
        return dict(self._last)

    def get_extra_state(self) -> Any:
        return {"generator": self.generator.get_state(), "last": dict(self._last)}

    def set_extra_state(self, state: Any) -> None:
        self.generator.set_state(state["generator"])
        self._last = dict(state["last"])


class IMTLLossWeighting(Weighting):
    """IMTL-L, the loss part of impartial multi-task learning (Liu et al., ICLR 2021):
    ``sum_t exp(s_t)·L_t − s_t`` with learned ``s_t`` (float32, initially 0: equal weights).

    For a fixed loss the term is smallest at ``s_t = −log L_t``, where the task's weighted loss
    ``exp(s_t)·L_t`` is 1: every task is brought to the same scale.

    Args:
        tasks: the task names.
        init: the initial ``s_t``.
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    def __init__(
        self, tasks: Iterable[str], *, init: float = 0.0, check_finite: bool = True
    ) -> None:
        super().__init__(check_finite=check_finite)
        self.tasks = check_task_names(tasks, what="tasks")
        _check_number("init", init)
        self.log_scales = nn.Parameter(torch.full((len(self.tasks),), init, dtype=torch.float32))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        loss = self._stack_losses(losses, torch.float32)
        s = self.log_scales.to(loss.dtype)
        return (torch.exp(s) * loss - s).sum()

    def effective_weights(self) -> dict[str, float]:
        """``exp(s_t)``."""
        return dict(zip(self.tasks, self.log_scales.detach().float().exp().tolist(), strict=True))


class DynamicWeightAverage(Weighting):
    """DWA, dynamic weight average (Liu, Johns & Davison, CVPR 2019): ``sum_t w_t·L_t`` with
    ``w_t = T·softmax_t(r_t / τ)``, ``r_t = L̄_t(e−1) / L̄_t(e−2)`` from the epoch means of the
    training losses, and ``w_t = 1`` in the first two epochs.

    The training loop calls :meth:`on_epoch` before each epoch; the losses of the training calls
    in between are summed (detached). The sums and the last two epoch means are in the state, so
    a run resumed mid-epoch goes on with the same statistics. Under ``torch.distributed`` each
    rank sums its own losses (they are not buffers, which DDP would overwrite with rank 0's) and
    the epoch's sums are all-reduced: every rank uses the global means and the same weights.

    Args:
        tasks: the task names.
        temperature: ``τ`` (2 in the paper).
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    def __init__(
        self, tasks: Iterable[str], *, temperature: float = 2.0, check_finite: bool = True
    ) -> None:
        super().__init__(check_finite=check_finite)
        self.tasks = check_task_names(tasks, what="tasks")
        _check_number("temperature", temperature, above=0.0)
        self.temperature = temperature
        n = len(self.tasks)
        # This epoch's sums of [L_1, ..., L_T, calls], on the losses' device (see above).
        self.epoch_sums = torch.zeros(n + 1, dtype=torch.float32)
        self.register_buffer("means", torch.zeros(2, n, dtype=torch.float32))  # e−2, e−1
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.int64))
        self.register_buffer("weights", torch.ones(n, dtype=torch.float32))
        self.means: Tensor
        self.epochs_done: Tensor
        self.weights: Tensor

    def on_epoch(self, epoch: int) -> None:
        """Closes the epoch whose losses were summed (if any) and sets the weights."""
        del epoch
        sums = all_reduced(self.epoch_sums)
        if float(sums[-1]) == 0:
            return
        mean = (sums[:-1] / sums[-1]).to(self.means.device)
        self.means.copy_(torch.stack([self.means[1], mean]))
        self.epochs_done += 1
        self.epoch_sums.zero_()
        if int(self.epochs_done) >= 2:
            ratio = self.means[1] / self.means[0]
            self.weights.copy_(len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        loss = self._stack_losses(losses, torch.float32)
        if self.training:
            if self.epoch_sums.device != loss.device:
                self.epoch_sums = self.epoch_sums.to(loss.device)
            one = torch.ones(1, device=loss.device)
            self.epoch_sums += torch.cat([loss.detach().float(), one])
        return (self.weights.to(loss.dtype) * loss).sum()

    def effective_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))

    def get_extra_state(self) -> Any:
        return {"epoch_sums": self.epoch_sums.detach().cpu().clone()}  # a copy, never an alias

    def set_extra_state(self, state: Any) -> None:
        self.epoch_sums = state["epoch_sums"].to(self.weights.device, copy=True)

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, temperature={self.temperature}"


class GradNorm(Weighting):
    """GradNorm (Chen et al., ICML 2018): ``sum_t w_t·L_t`` with weights learned so that each
    task's gradient at the last shared layer ``W`` has a norm that follows its training rate.

    At every training step, with ``n_t = ||∇_W L_t||`` (so that ``G_t = ||∇_W w_t·L_t|| =
    w_t·n_t``), ``r_t = (L_t / L_t(0)) / mean_k(L_k / L_k(0))`` and the target ``mean(G)·r_t^α``
    held constant, the weights take their own plain gradient step on
    ``sum_t |G_t − mean(G)·r_t^α|``, whose gradient is ``sign(G_t − target_t)·n_t``, and are
    renormalised to sum to ``T`` (and kept above 1e-6·T: ``G_t = w_t·n_t`` needs ``w_t > 0``).
    The network's optimiser never sees the weights: they are a buffer, not a parameter.

    The training step calls :meth:`task_gradients` between forward and backward (``T`` extra
    backward passes, each through one task's head only, down to ``W``), and :meth:`after_step`
    after the optimiser's step. ``L_t(0)`` is the first training step's loss (a task whose loss
    was 0 there takes its first positive one). Under ``torch.distributed`` the norms and losses
    are averaged over the ranks, so every rank takes the same step.

    Args:
        tasks: the task names.
        alpha: ``α``, the strength of the pull towards equal training rates (1.5 in the paper).
        lr: the learning rate of the weights' own step.
        check_finite: raise ``ValueError`` naming the task when a loss is NaN or infinite.
    """

    needs_task_gradients = True

    def __init__(
        self,
        tasks: Iterable[str],
        *,
        alpha: float = 1.5,
        lr: float = 0.025,
        check_finite: bool = True,
    ) -> None:
        super().__init__(check_finite=check_finite)
        self.tasks = check_task_names(tasks, what="tasks")
        _check_number("alpha", alpha, at_least=0.0)
        _check_number("lr", lr, at_least=0.0)
        self.alpha, self.lr = alpha, lr
        n = len(self.tasks)
        self.register_buffer("weights", torch.ones(n, dtype=torch.float32))
        self.register_buffer("initial_losses", torch.zeros(n, dtype=torch.float32))
        self.weights: Tensor
        self.initial_losses: Tensor
        self._step: Tensor | None = None  # the weights' gradient, between the two calls

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        loss = self._stack_losses(losses, torch.float32)
        return (self.weights.to(loss.dtype) * loss).sum()

    def task_gradients(
        self, losses: Mapping[str, Tensor], shared: Sequence[Tensor], *, scale: float = 1.0
    ) -> None:
        if isinstance(shared, Tensor):  # type: ignore[unreachable]  # untyped callers pass one
            # Iterating one tensor would give its rows, which no loss depends on: every norm
            # would be 0 and the weights would never move.
            raise TypeError(
                "GradNorm.task_gradients: shared must be a list of the last shared layer's "
                "parameters (e.g. list(layer.parameters()) or [layer.weight]), not one tensor"
            )
        loss = self._stack_losses(losses, torch.float32).detach()
        shared = [p for p in shared if p.requires_grad]
        if not shared:
            raise ValueError("GradNorm needs the parameters of the last shared layer")
        norms = []
        for task in self.tasks:
            grads = torch.autograd.grad(
                losses[task] * scale, shared, retain_graph=True, allow_unused=True
            )
            squares = [g.float().pow(2).sum() for g in grads if g is not None]
            norm = torch.stack(squares).sum().sqrt() if squares else loss.new_zeros(())
            norms.append(norm / scale)
        stats = all_reduced(torch.stack([torch.stack(norms), loss]), mean=True)
        n, loss = stats[0], stats[1]
        initial = self.initial_losses.to(loss.device)
        initial = torch.where(initial > 0, initial, loss)
        self.initial_losses.copy_(initial)
        ratio = torch.where(initial > 0, loss / initial.clamp(min=1e-30), torch.ones_like(loss))
        rate = ratio / ratio.mean().clamp(min=1e-30)
        weighted = self.weights.to(n.device) * n
        target = weighted.mean() * rate.pow(self.alpha)
        self._step = torch.sign(weighted - target) * n

    def after_step(self) -> None:
        if self._step is None:
            raise RuntimeError(
                "GradNorm.after_step: task_gradients(losses, shared) was not called this step; "
                "without it the weights never move (call it between the forward pass and "
                "backward, as umtl train does)"
            )
        n = len(self.tasks)
        weights = (self.weights - self.lr * self._step.to(self.weights.device)).clamp(min=1e-6 * n)
        self.weights.copy_(weights * (n / weights.sum()))
        self._step = None

    def effective_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, alpha={self.alpha}, lr={self.lr}"
