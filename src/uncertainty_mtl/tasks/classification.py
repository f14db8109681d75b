"""Image classification: cross-entropy loss (softmax likelihood) and accuracy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["LIKELIHOOD", "classification_loss", "correct_count"]

LIKELIHOOD = "softmax"


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy. ``logits: [B, C]``, ``labels: [B]`` (int64) -> 0-dim."""
    return F.cross_entropy(logits, labels)


def correct_count(logits: Tensor, labels: Tensor) -> int:
    """How many of the ``B`` predictions ``argmax(logits)`` equal ``labels``."""
    return int((logits.argmax(dim=1) == labels).sum())
