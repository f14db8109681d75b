"""Instance AP and AP50 in the Cityscapes definition, computed by ``cityscapesscripts`` itself.

Predictions are written in the official format (one mask PNG per instance and, per image, a text
file of ``mask labelId confidence`` lines) and scored by the official matching and averaging
(``evalInstanceLevelSemanticLabeling``: overlaps 0.50:0.95, unmatched predictions on void or
group regions not counted as false positives, classes without ground truth left out). We call
its functions directly rather than its ``evaluateImgLists``, which writes ``matches.json`` into
the working directory and caches the ground truth beside its own source file.

The official minimum region size (100 pixels at 1024×2048) is scaled with the pixel area of the
ground truth: ``100 · H·W / (1024·2048)``. At 128×256 that is 1.6 pixels, so every instance
counts, as nearly every one does at full resolution.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from uncertainty_mtl.data.labels import TRAIN_ID_NAMES, id_to_train_id
from uncertainty_mtl.inference.clustering import InstanceMap

__all__ = ["FULL_RESOLUTION_PIXELS", "instance_ap"]


class _NumpyWithIn1d:
    """NumPy plus ``in1d``, which NumPy 2.4 removed and cityscapesscripts 2.3 still calls: given
    to the official evaluation module as its ``np`` (NumPy itself is left alone)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def in1d(a: Any, b: Any, assume_unique: bool = False, invert: bool = False) -> Any:
        return np.isin(np.asarray(a).ravel(), b, assume_unique=assume_unique, invert=invert)


def _official() -> Any:
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official

    if not hasattr(official.np, "in1d"):
        official.np = _NumpyWithIn1d()
    return official


FULL_RESOLUTION_PIXELS = 1024 * 2048
_OFFICIAL_MIN_REGION = 100


def _label_id_of_train_id() -> dict[int, int]:
    return {int(t): i for i, t in enumerate(id_to_train_id()) if t < 255 and i < 34}


def instance_ap(frames: Sequence[tuple[str | os.PathLike[str], InstanceMap]]) -> dict[str, Any]:
    """AP over a split.

    Args:
        frames: per image, the path of its ground-truth ``instanceIds.png`` and the predicted
            instances at that file's resolution.

    Returns:
        ``instance_ap`` and ``instance_ap50`` (percent), ``instance_ap_per_class`` (percent, by
        class name; ``None`` for classes without ground truth) and ``ap_min_region_px``.
    """
    from cityscapesscripts.evaluation.instances2dict import instances2dict

    official = _official()
    if not frames:
        raise ValueError("no frames to evaluate")
    with Image.open(frames[0][0]) as first:
        width, height = first.size
    min_region = _OFFICIAL_MIN_REGION * height * width / FULL_RESOLUTION_PIXELS
    args = copy.copy(official.args)
    args.quiet = True
    args.JSONOutput = False
    args.distanceAvailable = False
    args.minRegionSizes = np.array([min_region, min_region, min_region])
    official.setInstanceLabels(args)
    label_ids = _label_id_of_train_id()
    with tempfile.TemporaryDirectory(prefix="umtl-ap-") as tmp:
        root = Path(tmp).resolve()
        args.predictionPath = str(root)
        prediction_files, ground_truth = [], []
        for index, (gt_path, instances) in enumerate(frames):
            lines = []
            for k, train_id in instances.classes.items():
                name = f"{index:06d}_{k:04d}.png"
                Image.fromarray(((instances.ids == k) * 255).astype(np.uint8)).save(root / name)
                lines.append(f"{name} {label_ids[train_id]} {instances.confidences[k]:.6f}\n")
            info = root / f"{index:06d}.txt"
            info.write_text("".join(lines))
            prediction_files.append(str(info))
            ground_truth.append(str(Path(gt_path).resolve()))
        gt_instances = instances2dict(ground_truth, False)
        matches = official.matchGtWithPreds(prediction_files, ground_truth, gt_instances, args)
        averages = official.computeAverages(official.evaluateMatches(matches, args), args)
    per_class = {}
    for name in TRAIN_ID_NAMES:
        if name in averages["classes"]:
            value = float(averages["classes"][name]["ap"])
            per_class[name] = None if np.isnan(value) else 100 * value
    return {
        "instance_ap": 100 * float(averages["allAp"]),
        "instance_ap50": 100 * float(averages["allAp50%"]),
        "instance_ap_per_class": per_class,
        "ap_min_region_px": min_region,
    }
