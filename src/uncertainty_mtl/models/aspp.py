"""Atrous spatial pyramid pooling: torchvision's, with the paper's settings."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

__all__ = ["build_aspp"]


def build_aspp(
    in_channels: int,
    *,
    rates: Sequence[int] = (12, 24, 36),
    channels: int = 256,
    dropout: float = 0.0,
) -> ASPP:
    """A 1×1 convolution, 3×3 convolutions at ``rates`` and image pooling, ``channels`` each with
    BatchNorm and ReLU, concatenated and projected to ``channels``.

    torchvision ends the projection with ``Dropout(0.5)``; the paper does not describe one, so
    the default here is none (``dropout=0``).
    """
    aspp = ASPP(in_channels, list(rates), channels)
    aspp.project[3] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
    return aspp
