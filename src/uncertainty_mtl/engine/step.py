"""The optimiser step every training loop shares (the scene trainer, the two-task study, the
methods benchmark): one update from a forward pass's outputs, with the hooks a weighting needs,
and the constraints of the gradient aggregators, checked before a run starts."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from uncertainty_mtl.config import ConfigError, TrainConfig
from uncertainty_mtl.engine.distributed import Process
from uncertainty_mtl.weighting import Weighting
from uncertainty_mtl.weighting.step import weighting_backward

__all__ = ["SharedTrunk", "check_aggregation", "log_record", "update"]


class SharedTrunk(Protocol):
    """What :func:`update` needs of a network: the parameters every task depends on, and the last
    layer of them (``MultiTaskNet``, ``ConvAutoencoderClassifier``)."""

    def last_shared_layer(self) -> nn.Module: ...

    def shared_parameters(self) -> list[nn.Parameter]: ...


def _norm(gradients: list[Tensor | None]) -> float:
    squares = [g.detach().float().pow(2).sum() for g in gradients if g is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


def update(
    model: SharedTrunk,
    weighting: Weighting,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    total: Tensor,
    losses: dict[str, Tensor],
    features: Tensor | None,
    *,
    compare_to_equal: bool = False,
) -> float | None:
    """One optimiser update from a forward pass's outputs (``NetWithLoss``), with the hooks a
    weighting may need: GradNorm's task gradients at the last shared layer before the backward
    pass and its own step after the optimiser's; a gradient aggregator's backward from the
    shared ``features`` instead of ``total.backward()``.

    With ``compare_to_equal`` (a diagnostic of the methods benchmark, on one process and not
    under ``torch.compile``): also the gradient of ``Σ_t L_t`` (``equal``) on the same batch,
    by one more backward pass; returns the norm of the shared parameters' gradient the
    optimiser is given over that of ``equal`` (the ratio of the SGD steps the two would take
    at one learning rate), else ``None``."""
    equal_norm = 0.0
    if compare_to_equal:
        trunk = [p for p in model.shared_parameters() if p.requires_grad]
        plain = torch.stack([loss.float() for loss in losses.values()]).sum()
        grads = torch.autograd.grad(plain, trunk, retain_graph=True, allow_unused=True)
        equal_norm = _norm(list(grads))
    optimiser.zero_grad(set_to_none=True)
    weighting_backward(
        weighting,
        losses,
        total,
        features=features,
        shared=model.shared_parameters(),
        last_shared=model.last_shared_layer().parameters(),
        scaler=scaler,
    )
    ratio = None
    if compare_to_equal and equal_norm > 0:
        unscale = float(scaler.get_scale()) if scaler.is_enabled() else 1.0
        ratio = _norm([p.grad for p in trunk]) / unscale / equal_norm
    scaler.step(optimiser)
    scaler.update()
    weighting.after_step()
    return ratio


def check_aggregation(config: TrainConfig, proc: Process) -> None:
    """Gradient aggregators combine the Jacobian of one process's batch: under DDP each rank
    would aggregate its own and the ranks' updates would be averaged (another method), so a
    run of several processes is refused before it starts. (What the config alone rules out,
    ``run.compile`` and ``optim.amp``, is refused when the config is loaded.)"""
    if proc.world > 1:
        raise ConfigError(
            f"weighting.kind {config.weighting.kind!r}: gradient aggregators train on one "
            f"process (this run has {proc.world}); run it without torchrun"
        )


def log_record(
    step: int,
    epoch: int,
    losses: dict[str, Tensor],
    total: Tensor,
    weighting: Weighting,
    lr: float,
    update_norm_vs_equal: float | None = None,
) -> dict[str, Any]:
    """One line of a run's ``metrics.jsonl`` (every loop writes the same keys): ``step``,
    ``epoch``, ``loss/<task>``, ``loss/total``, the weighting's ``log_dict`` (``log_var/``,
    ``var/``, ``weight/<task>`` as it has them), ``lr``, the rate the step used, and
    ``update_norm_vs_equal`` where the step measured it (:func:`update`)."""
    record = {
        "step": step,
        "epoch": epoch,
        **{f"loss/{t}": float(v.detach()) for t, v in losses.items()},
        "loss/total": float(total.detach()),
        **weighting.log_dict(),
        "lr": lr,
    }
    if update_norm_vs_equal is not None:
        record["update_norm_vs_equal"] = update_norm_vs_equal
    return record
