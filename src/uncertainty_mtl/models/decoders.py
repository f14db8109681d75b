"""One small decoder per task (paper §4): 3×3 convolution, BatchNorm, ReLU, 1×1 convolution."""

from __future__ import annotations

from torch import nn

__all__ = ["TaskDecoder"]


class TaskDecoder(nn.Sequential):
    """``[B, C, h, w]`` shared features -> ``[B, out_channels, h, w]`` task output (before
    upsampling to the input size)."""

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int = 256) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )
