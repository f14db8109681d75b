"""One training step for every method, in your own loop: a loss weighting and a gradient
aggregator behind the same call.

A loss weighting needs ``total.backward()``; GradNorm also each task's gradient of the last
shared layer before it and its own update after the optimiser's; a gradient aggregator (MGDA,
FairGrad, Nash-MTL, ...) differentiates each task's loss down to the shared features instead
of ``total.backward()`` (through torchjd's ``mtl_backward``). :func:`weighting_step` does
whichever the method needs, so one loop trains them all (the training loop of ``umtl`` calls
the same :func:`weighting_backward`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from uncertainty_mtl.weighting.base import Weighting

__all__ = ["weighting_backward", "weighting_step"]


def weighting_backward(
    method: Weighting,
    losses: Mapping[str, Tensor],
    total: Tensor | None = None,
    *,
    features: Tensor | None = None,
    shared: Iterable[nn.Parameter] = (),
    last_shared: Iterable[nn.Parameter] = (),
    scaler: torch.amp.GradScaler | None = None,
) -> Tensor:
    """Accumulates the method's update into the parameters' ``.grad`` (call the optimiser's
    ``zero_grad`` before, its ``step`` and then ``method.after_step()`` after; or use
    :func:`weighting_step`, which does all of it).

    Args:
        method: any weighting (``weighting.registry.build_method``, ``UncertaintyWeighting``,
            ``GradientAggregation``, ...).
        losses: ``{task: 0-dim loss}`` of this batch, still attached to the graph.
        total: ``method(losses)`` if you computed it already (it is computed here otherwise).
        features: a gradient aggregator's: the shared trunk's output that every head reads
            (e.g. ``[B, C, H, W]``), from the same forward pass as ``losses``.
        shared: a gradient aggregator's: the trunk's parameters (those that compute
            ``features``); the heads get their own task's gradient as usual.
        last_shared: GradNorm's: the parameters of the trunk's last layer.
        scaler: a ``GradScaler`` under AMP (loss weightings only).

    Returns:
        ``total``, for logging (a gradient aggregator's is the plain sum of the losses).

    Raises:
        ValueError: the method needs ``features`` and ``shared`` (an aggregator) or
            ``last_shared`` (GradNorm), and they were not given.
    """
    if total is None:
        total = method(losses)
    name = type(method).__name__
    if method.needs_task_gradients:
        layer = list(last_shared)
        if not layer:
            raise ValueError(
                f"{name} weighs tasks by their gradients at the last shared layer: pass "
                "last_shared=list(<trunk's last layer>.parameters())"
            )
        scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        method.task_gradients(losses, layer, scale=scale)
    if method.needs_features:
        trunk = [p for p in shared if p.requires_grad]
        if features is None or not trunk:
            raise ValueError(
                f"{name} combines the tasks' gradients of the shared trunk: pass features=<the "
                "trunk's output the heads read> and shared=<the trunk's parameters>"
            )
        method.backward_from_features(losses, features, trunk)
    else:
        scaled = scaler.scale(total) if scaler is not None else total
        scaled.backward()
    return total


def weighting_step(
    method: Weighting,
    losses: Mapping[str, Tensor],
    optimiser: torch.optim.Optimizer,
    *,
    features: Tensor | None = None,
    shared: Iterable[nn.Parameter] = (),
    last_shared: Iterable[nn.Parameter] = (),
    scaler: torch.amp.GradScaler | None = None,
) -> Tensor:
    """One optimiser update of a multi-task network for any method: ``zero_grad``, the
    method's backward (:func:`weighting_backward`), the optimiser's step, the method's own update.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from uncertainty_mtl.weighting import weighting_step
        >>> from uncertainty_mtl.weighting.registry import BuildArgs, build_method
        >>> trunk, head_a, head_b = nn.Linear(4, 8), nn.Linear(8, 1), nn.Linear(8, 1)
        >>> method = build_method("fairgrad", BuildArgs(tasks=["a", "b"]))
        >>> params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]
        >>> optimiser = torch.optim.Adam(params, lr=1e-3)
        >>> x, y = torch.randn(16, 4), torch.randn(16, 2)
        >>> features = trunk(x)
        >>> losses = {"a": (head_a(features)[:, 0] - y[:, 0]).pow(2).mean(),
        ...           "b": (head_b(features)[:, 0] - y[:, 1]).pow(2).mean()}
        >>> total = weighting_step(
        ...     method, losses, optimiser, features=features, shared=trunk.parameters()
        ... )
        >>> total.shape
        torch.Size([])

    Call ``method.on_epoch(epoch)`` at the start of each epoch as well (DWA reads it).

    Returns:
        The total loss, detached, for logging.
    """
    optimiser.zero_grad(set_to_none=True)
    total = weighting_backward(
        method,
        losses,
        features=features,
        shared=shared,
        last_shared=last_shared,
        scaler=scaler,
    )
    if scaler is not None:
        scaler.step(optimiser)
        scaler.update()
    else:
        optimiser.step()
    method.after_step()
    return total.detach()
