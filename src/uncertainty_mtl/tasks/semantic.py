"""Semantic segmentation: cross-entropy over the labelled pixels (softmax likelihood)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["IGNORE_INDEX", "LIKELIHOOD", "semantic_loss"]

#: The trainId of unlabelled pixels, which no loss or metric counts.
IGNORE_INDEX = 255

LIKELIHOOD = "softmax"


def semantic_loss(logits: Tensor, targets: dict[str, Tensor]) -> Tensor:
    """Mean cross-entropy over the pixels whose label is not 255.

    Args:
        logits: ``[B, 19, H, W]``.
        targets: with ``semantic`` int64 ``[B, H, W]``.

    Returns:
        0-dim; 0 (with a graph) when no pixel of the batch is labelled.
    """
    labels = targets["semantic"]
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    # Sum / count instead of the mean: no NaN for an unlabelled batch, and no device sync.
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)
