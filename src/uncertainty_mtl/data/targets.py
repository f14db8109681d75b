"""Training targets from the decoded Cityscapes files, on NumPy arrays.

All targets are at the resolution of the arrays given; offsets and disparity are in pixels of
that resolution.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from uncertainty_mtl.data.labels import SKY_LABEL_ID, id_to_train_id, instance_label_ids

__all__ = [
    "decode_disparity",
    "encode_disparity",
    "instance_centroids",
    "instance_targets",
    "inverse_depth_targets",
    "semantic_target",
]


def semantic_target(label_ids: NDArray[np.integer]) -> NDArray[np.uint8]:
    """trainIds ``[H, W]`` (255 = ignore) from official label ids (255 = license plate)."""
    return id_to_train_id()[label_ids.astype(np.uint8, copy=False)]


def _instance_pixels(instance_ids: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Pixels of individual instances of evaluated instance classes.

    Values below 1000 are plain label ids (stuff, or crowd regions of instance classes); caravan
    and trailer instances are not evaluated.
    """
    ids = instance_ids.astype(np.int64, copy=False)
    candidates = ids >= 1000
    evaluated = np.zeros(ids.shape, dtype=bool)
    evaluated[candidates] = np.isin(ids[candidates] // 1000, list(instance_label_ids()))
    return evaluated


def _centroids(
    instance_ids: NDArray[np.integer], mask: NDArray[np.bool_]
) -> tuple[
    NDArray[np.intp],
    NDArray[np.intp],
    NDArray[np.integer],
    NDArray[np.intp],
    NDArray[np.float64],
    NDArray[np.float64],
]:
    """Rows, columns, instance ids, each pixel's index into the ids, and centroids x and y."""
    ys, xs = np.nonzero(mask)
    ids, inverse = np.unique(instance_ids[mask], return_inverse=True)
    count = np.bincount(inverse)
    cx = np.bincount(inverse, weights=xs) / count
    cy = np.bincount(inverse, weights=ys) / count
    return ys, xs, ids, inverse, cx, cy


def instance_centroids(instance_ids: NDArray[np.integer]) -> dict[int, tuple[float, float]]:
    """``{instance id: (x, y)}``: mean column and row of each evaluated instance's pixels."""
    _, _, ids, _, cx, cy = _centroids(instance_ids, _instance_pixels(instance_ids))
    return {int(i): (float(x), float(y)) for i, x, y in zip(ids, cx, cy, strict=True)}


def instance_targets(
    instance_ids: NDArray[np.integer],
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Offsets from each instance pixel to its instance's centroid, and the instance mask.

    Returns:
        ``offset [2, H, W]`` float32 (channel 0 = x / columns, channel 1 = y / rows; 0 outside the
        mask) and ``mask [H, W]`` bool. The centroid is that of the instance's visible pixels,
        so the parts of an instance split by an occluder vote for one point.
    """
    mask = _instance_pixels(instance_ids)
    offset = np.zeros((2, *instance_ids.shape), dtype=np.float32)
    if mask.any():
        ys, xs, _, inverse, cx, cy = _centroids(instance_ids, mask)
        offset[0, ys, xs] = cx[inverse] - xs
        offset[1, ys, xs] = cy[inverse] - ys
    return offset, mask


def decode_disparity(png: NDArray[np.integer]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Cityscapes 16-bit disparity: ``d = (p - 1) / 256`` for ``p > 0``; ``p = 0`` is invalid."""
    p = png.astype(np.float32)
    valid = png > 0
    return np.where(valid, (p - 1.0) / 256.0, 0.0).astype(np.float32), valid


def encode_disparity(
    disparity: NDArray[np.floating], valid: NDArray[np.bool_]
) -> NDArray[np.uint16]:
    """Inverse of :func:`decode_disparity` (rounded to 1/256 px; clipped to the 16-bit range)."""
    p = np.clip(np.rint(np.asarray(disparity, dtype=np.float64) * 256.0) + 1.0, 1, 65535)
    return np.where(valid, p, 0).astype(np.uint16)


def inverse_depth_targets(
    disparity_png: NDArray[np.integer], label_ids: NDArray[np.integer]
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Inverse depth as disparity in pixels, and where it is labelled.

    Sky is 0 (infinite depth) and labelled, whatever the stereo matcher wrote there; elsewhere a
    pixel is labelled when its disparity is valid (``p > 0``).
    """
    disparity, valid = decode_disparity(disparity_png)
    sky = label_ids == SKY_LABEL_ID
    disparity[sky] = 0.0
    return disparity, valid | sky
