"""Image reconstruction: mean absolute error (Laplace likelihood)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["LIKELIHOOD", "reconstruction_loss"]

LIKELIHOOD = "laplace"


def reconstruction_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over every pixel. Both ``[B, C, H, W]`` -> 0-dim."""
    return (prediction - target).abs().mean()
