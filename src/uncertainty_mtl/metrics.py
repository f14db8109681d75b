"""Scene metrics accumulated over a whole split, never averaged per image.

* semantic: a 19×19 confusion matrix over pixels with a label; IoU per class
  ``tp / (tp + fp + fn)``; mean IoU over the classes present in the ground truth or the
  prediction (classes absent from both are left out, as in ``cityscapesscripts``);
* instance: mean over instance pixels of ``|dx - dx*| + |dy - dy*|`` (pixels);
* depth: mean absolute and root-mean-square error of inverse depth (pixels of disparity) over
  labelled pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from uncertainty_mtl.data.labels import IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_NAMES

__all__ = ["SceneMetrics", "miou_from_confusion"]


def miou_from_confusion(confusion: Tensor) -> tuple[float, list[float | None]]:
    """Mean IoU (percent) and per-class IoU (percent, ``None`` when the class is absent from
    both ground truth and prediction) of a ``[C, C]`` confusion matrix (rows: ground truth)."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    per_class: list[float | None] = [
        100.0 * float(t / u) if u > 0 else None for t, u in zip(tp, union, strict=True)
    ]
    present = [v for v in per_class if v is not None]
    return (sum(present) / len(present) if present else math.nan), per_class


class SceneMetrics:
    """Sums over a split; :meth:`update` per batch, :meth:`compute` at the end.

    Args:
        tasks: the tasks to measure.
        device: where the sums live (the outputs' device).
    """

    def __init__(self, tasks: Sequence[str], device: torch.device | str = "cpu") -> None:
        self.tasks = tuple(tasks)
        self.confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64, device=device)
        # instance error sum, instance pixels, depth |e| sum, depth e² sum, depth pixels
        self.sums = torch.zeros(5, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> None:
        """Adds a batch: ``outputs`` of :class:`~uncertainty_mtl.models.MultiTaskNet` (its
        ``semantic`` may also be predicted trainIds ``[B, H, W]``), ``targets`` of
        :class:`~uncertainty_mtl.data.cityscapes.CityscapesScenes` (batched)."""
        if "semantic" in self.tasks:
            labels = targets["semantic"]
            valid = labels != IGNORE_INDEX
            semantic = outputs["semantic"]
            # [B, 19, H, W] scores, or [B, H, W] predicted trainIds
            predicted = semantic if semantic.dim() == 3 else semantic.argmax(dim=1)
            index = labels[valid] * NUM_CLASSES + predicted[valid]
            self.confusion += torch.bincount(index, minlength=NUM_CLASSES**2).view(
                NUM_CLASSES, NUM_CLASSES
            )
        if "instance" in self.tasks:
            mask = targets["instance_mask"]
            error = (outputs["instance"].double() - targets["instance_offset"]).abs().sum(1)
            self.sums[0] += error[mask].sum()
            self.sums[1] += mask.sum()
        if "depth" in self.tasks:
            mask = targets["depth_mask"]
            error = outputs["depth"][:, 0].double() - targets["inverse_depth"]
            self.sums[2] += error[mask].abs().sum()
            self.sums[3] += error[mask].pow(2).sum()
            self.sums[4] += mask.sum()

    def all_reduce(self) -> None:
        """Sums the accumulators over all processes of the default process group."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.confusion)
            dist.all_reduce(self.sums)

    def compute(self) -> dict[str, Any]:
        """``miou``, ``iou_per_class`` (by class name), ``pixel_accuracy``;
        ``instance_mean_error_px``; ``depth_mean_error_px``, ``depth_rms_error_px``; and the
        pixel counts, for the measured tasks."""
        out: dict[str, Any] = {}
        if "semantic" in self.tasks:
            miou, per_class = miou_from_confusion(self.confusion)
            total = int(self.confusion.sum())
            out["miou"] = miou
            out["iou_per_class"] = dict(zip(TRAIN_ID_NAMES, per_class, strict=True))
            out["pixel_accuracy"] = (
                100.0 * float(self.confusion.diagonal().sum()) / total if total else math.nan
            )
            out["semantic_pixels"] = total
        sums = self.sums.tolist()
        if "instance" in self.tasks:
            out["instance_mean_error_px"] = sums[0] / sums[1] if sums[1] else math.nan
            out["instance_pixels"] = int(sums[1])
        if "depth" in self.tasks:
            out["depth_mean_error_px"] = sums[2] / sums[4] if sums[4] else math.nan
            out["depth_rms_error_px"] = math.sqrt(sums[3] / sums[4]) if sums[4] else math.nan
            out["depth_pixels"] = int(sums[4])
        return out
