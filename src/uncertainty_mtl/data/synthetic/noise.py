"""Noise: smooth value noise for textures, and each task's own label noise (boundaries of the
label maps, stereo-like disparity errors and holes)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def _lattice(ix: NDArray[np.int64], iy: NDArray[np.int64], salt: int) -> NDArray[np.float64]:
    h = (ix * 374761393 + iy * 668265263 + salt * 2147483647) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return (h & 0xFFFF) / 65535.0


def value_noise(x: NDArray[np.float64], y: NDArray[np.float64], salt: int) -> NDArray[np.float64]:
    """Smooth noise in [0, 1]; one lattice cell per unit of ``x`` and ``y``."""
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = x0.astype(np.int64), y0.astype(np.int64)
    a, b = _lattice(ix, iy, salt), _lattice(ix + 1, iy, salt)
    c, d = _lattice(ix, iy + 1, salt), _lattice(ix + 1, iy + 1, salt)
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy


def label_noise(
    rng: np.random.Generator, labels: NDArray[np.uint8], instances: NDArray[np.int32]
) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """Annotators' imprecision: a third of the pixels along instance or class boundaries take
    the label of a random 4-neighbour (the semantic and instance maps alike)."""
    H, W = labels.shape
    boundary = np.zeros((H, W), dtype=bool)
    boundary[:, :-1] |= instances[:, :-1] != instances[:, 1:]
    boundary[:, 1:] |= instances[:, :-1] != instances[:, 1:]
    boundary[:-1] |= instances[:-1] != instances[1:]
    boundary[1:] |= instances[:-1] != instances[1:]
    ys, xs = np.nonzero(boundary & (rng.random((H, W)) < 0.33))
    step = rng.integers(0, 4, len(ys))
    ny = np.clip(ys + np.array([-1, 1, 0, 0])[step], 0, H - 1)
    nx = np.clip(xs + np.array([0, 0, -1, 1])[step], 0, W - 1)
    labels, instances = labels.copy(), instances.copy()
    labels[ys, xs] = labels[ny, nx]
    instances[ys, xs] = instances[ny, nx]
    return labels, instances


def stereo_noise(
    rng: np.random.Generator,
    disparity: NDArray[np.float64],
    valid: NDArray[np.bool_],
    u: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """What a stereo matcher would deliver: noise growing with disparity, 1% mismatches, no
    value where the right camera cannot see the pixel, and holes where texture is weak."""
    H, W = disparity.shape
    noisy = disparity + rng.normal(0, 1, (H, W)) * (0.05 + 0.02 * disparity)
    mismatches = rng.random((H, W)) < 0.01
    noisy[mismatches] = disparity[mismatches] * rng.uniform(0.5, 1.5, int(mismatches.sum()))
    # A pixel is occluded in the right view when something to its right lands left of it there.
    right_x = u - disparity
    later_min = np.minimum.accumulate(right_x[:, ::-1], axis=1)[:, ::-1]
    occluded = np.zeros((H, W), dtype=bool)
    occluded[:, :-1] = later_min[:, 1:] < right_x[:, :-1] - 0.5
    rows = np.arange(H)[:, None] + np.zeros((1, W))
    blobs = value_noise(u / 9 + rng.uniform(0, 1e3), rows / 9 + rng.uniform(0, 1e3), 19) > 0.82
    valid = valid & ~occluded & ~blobs & (right_x >= 0)
    return np.maximum(noisy, 0.0), valid
