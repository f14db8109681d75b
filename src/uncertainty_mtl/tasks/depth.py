"""Inverse depth regression: L1 over the pixels with a label (Laplace likelihood)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["LIKELIHOOD", "depth_loss"]

LIKELIHOOD = "laplace"


def depth_loss(prediction: Tensor, targets: dict[str, Tensor]) -> Tensor:
    """``|d - d*|`` averaged over the labelled pixels of the batch (``depth_mask``).

    Args:
        prediction: ``[B, 1, H, W]`` inverse depth (disparity in pixels).
        targets: with ``inverse_depth`` ``[B, H, W]`` and ``depth_mask`` bool ``[B, H, W]``.

    Returns:
        0-dim; 0 (with a graph) when no pixel of the batch is labelled.
    """
    mask = targets["depth_mask"]
    error = (prediction[:, 0].float() - targets["inverse_depth"]).abs()
    return (error * mask).sum() / mask.sum().clamp(min=1)
