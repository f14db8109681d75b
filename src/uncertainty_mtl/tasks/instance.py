"""Instance centroid regression: L1 of the offsets over instance pixels (Laplace likelihood)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["LIKELIHOOD", "instance_loss"]

LIKELIHOOD = "laplace"


def instance_loss(offsets: Tensor, targets: dict[str, Tensor]) -> Tensor:
    """``|dx - dx*| + |dy - dy*|`` averaged over the instance pixels of the batch.

    Args:
        offsets: ``[B, 2, H, W]`` predicted (x, y) offsets in pixels.
        targets: with ``instance_offset`` ``[B, 2, H, W]`` and ``instance_mask`` bool
            ``[B, H, W]``.

    Returns:
        0-dim; 0 (with a graph) when the batch has no instance pixel.
    """
    mask = targets["instance_mask"]
    error = (offsets.float() - targets["instance_offset"]).abs().sum(dim=1)
    return (error * mask).sum() / mask.sum().clamp(min=1)
