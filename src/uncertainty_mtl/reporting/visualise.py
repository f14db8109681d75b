"""Colour images of scene outputs: semantics, instances, inverse depth, instance offsets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from uncertainty_mtl.reporting.plots import new_figure, save_figure

__all__ = [
    "colour_depth",
    "colour_instances",
    "colour_offsets",
    "colour_semantic",
    "show_scenes",
]


def colour_semantic(train_ids: NDArray[np.integer]) -> NDArray[np.uint8]:
    """trainIds ``[H, W]`` -> RGB in the official Cityscapes colours (ignore = black)."""
    from uncertainty_mtl.data.labels import train_id_colours

    colours: NDArray[np.uint8] = train_id_colours()[np.asarray(train_ids).astype(np.int64) & 255]
    return colours


def colour_instances(instance_ids: NDArray[np.integer], *, min_id: int = 1000) -> NDArray[np.uint8]:
    """A distinct colour per instance id ``>= min_id`` (others black), stable across calls."""
    ids = np.asarray(instance_ids).astype(np.int64)
    hashed = (ids * 2654435761) & 0xFFFFFF
    rgb = np.stack([(hashed >> s) & 255 for s in (16, 8, 0)], axis=-1)
    rgb = 60 + (rgb * 195) // 255
    return np.where((ids >= min_id)[..., None], rgb, 0).astype(np.uint8)


def colour_depth(
    inverse_depth: NDArray[np.floating],
    mask: NDArray[np.bool_] | None = None,
    *,
    vmax: float | None = None,
) -> NDArray[np.uint8]:
    """Inverse depth -> ``magma`` colour map (near = bright); unlabelled pixels black."""
    from matplotlib import colormaps

    d = np.asarray(inverse_depth, dtype=np.float64)
    valid = np.ones(d.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    top = vmax if vmax is not None else (float(np.percentile(d[valid], 99)) if valid.any() else 1)
    rgb = colormaps["magma"](np.clip(d / max(top, 1e-6), 0, 1))[..., :3]
    rgb[~valid] = 0
    return (rgb * 255).astype(np.uint8)


def colour_offsets(
    offset: NDArray[np.floating], mask: NDArray[np.bool_], *, max_length: float | None = None
) -> NDArray[np.uint8]:
    """Instance offsets ``[2, H, W]`` as in the paper's Figure 3: hue = direction, brightness =
    length; pixels outside ``mask`` black."""
    from matplotlib.colors import hsv_to_rgb

    dx, dy = np.asarray(offset[0], dtype=np.float64), np.asarray(offset[1], dtype=np.float64)
    length = np.hypot(dx, dy)
    top = max_length or (float(np.percentile(length[mask], 99)) if mask.any() else 1.0)
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    hsv = np.stack([hue, np.ones_like(hue), np.clip(length / max(top, 1e-6), 0, 1)], axis=-1)
    rgb = hsv_to_rgb(hsv)
    rgb[~np.asarray(mask, dtype=bool)] = 0
    return (rgb * 255).astype(np.uint8)


def show_scenes(
    root: str | os.PathLike[str], split: str, *, n: int, out: str | os.PathLike[str]
) -> Path:
    """A figure with a row per frame: image, semantics, instances, inverse depth, offsets."""
    from uncertainty_mtl.data.cityscapes import CityscapesScenes
    from uncertainty_mtl.data.targets import (
        instance_targets,
        inverse_depth_targets,
        semantic_target,
    )

    data = CityscapesScenes(root, split, check_values=False)
    rows = min(n, len(data))
    if rows < 1:
        raise ValueError("--n must be >= 1")
    picks = np.linspace(0, len(data) - 1, rows).round().astype(int)
    fig, axes = new_figure(5, nrows=rows, width=3.2, height=1.8)
    titles = ("image", "semantic (trainIds)", "instances", "inverse depth", "instance offsets")
    for row, index in enumerate(picks):
        arrays = data.arrays(int(index))
        offset, mask = instance_targets(arrays["instance_ids"])
        depth, valid = inverse_depth_targets(arrays["disparity"], arrays["label_ids"])
        panels: list[Any] = [
            arrays["image"],
            colour_semantic(semantic_target(arrays["label_ids"])),
            colour_instances(np.where(mask, arrays["instance_ids"], 0)),
            colour_depth(depth, valid),
            colour_offsets(offset, mask),
        ]
        for col, panel in enumerate(panels):
            ax = axes[row * 5 + col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
        axes[row * 5].set_ylabel(data.samples[index].stem, fontsize=6)
    out = Path(out)
    save_figure(fig, out, dpi=110)
    return out
