"""Optimiser parameter groups that keep weight decay off the log-variances."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["parameter_groups"]


def parameter_groups(
    model: nn.Module,
    weighting: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    weighting_lr: float | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups for any ``torch.optim`` optimiser.

    Weight decay on ``s = log σ²`` pulls every ``σ²`` towards 1, i.e. towards equal weights,
    which is the very thing the method learns away from. So the weighting's parameters get their
    own group with ``weight_decay=0`` (and, optionally, their own learning rate).

    Parameters the weighting owns are left out of the model's group even when the weighting is a
    submodule of ``model`` (as it is when both are wrapped in one DDP module).

    Args:
        model: the network.
        weighting: the loss weighting; a weighting without parameters (``FixedWeighting``)
            adds no group.
        lr: learning rate of the network's parameters.
        weight_decay: weight decay of the network's parameters.
        weighting_lr: learning rate of the weighting's parameters; ``lr`` when ``None``.

    Returns:
        ``[{"name": "model", ...}, {"name": "weighting", ...}]``, e.g. for
        ``torch.optim.SGD(parameter_groups(...), lr=lr, momentum=0.9)``.
    """
    for name, value in (("lr", lr), ("weighting_lr", weighting_lr)):
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    weighting_params = [p for p in weighting.parameters() if p.requires_grad]
    owned = {id(p) for p in weighting_params}
    model_params = [p for p in model.parameters() if p.requires_grad and id(p) not in owned]
    if not model_params:
        raise ValueError("the model has no trainable parameters besides the weighting's")
    groups: list[dict[str, Any]] = [
        {"name": "model", "params": model_params, "lr": lr, "weight_decay": weight_decay}
    ]
    if weighting_params:
        groups.append(
            {
                "name": "weighting",
                "params": weighting_params,
                "lr": lr if weighting_lr is None else weighting_lr,
                "weight_decay": 0.0,
            }
        )
    return groups
