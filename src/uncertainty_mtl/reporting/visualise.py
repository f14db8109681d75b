"""Colour images of scene outputs: semantics, instances, inverse depth, instance offsets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from uncertainty_mtl.reporting.plots import new_figure, save_figure

__all__ = [
    "UNLABELLED",
    "add_keys",
    "colour_depth",
    "colour_instances",
    "colour_offsets",
    "colour_semantic",
    "prediction_strip",
    "show_scenes",
]


#: Pixels without a label (depth, offsets) are drawn in this grey: black means "far" in the
#: depth colour map and "no offset" in the offsets' one.
UNLABELLED = (0.5, 0.5, 0.5)


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
    """Inverse depth -> ``magma`` colour map on ``[0, vmax]`` (near = bright, far = black);
    unlabelled pixels grey (:data:`UNLABELLED`)."""
    from matplotlib import colormaps

    d = np.asarray(inverse_depth, dtype=np.float64)
    valid = np.ones(d.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    top = vmax if vmax is not None else (float(np.percentile(d[valid], 99)) if valid.any() else 1)
    rgb = colormaps["magma"](np.clip(d / max(top, 1e-6), 0, 1))[..., :3]
    rgb[~valid] = UNLABELLED
    return (rgb * 255).astype(np.uint8)


def colour_offsets(
    offset: NDArray[np.floating], mask: NDArray[np.bool_], *, max_length: float | None = None
) -> NDArray[np.uint8]:
    """Instance offsets ``[2, H, W]`` as in the paper's Figure 3: hue = direction, brightness =
    length (up to ``max_length``); pixels outside ``mask`` grey (:data:`UNLABELLED`)."""
    from matplotlib.colors import hsv_to_rgb

    dx, dy = np.asarray(offset[0], dtype=np.float64), np.asarray(offset[1], dtype=np.float64)
    length = np.hypot(dx, dy)
    top = max_length or (float(np.percentile(length[mask], 99)) if mask.any() else 1.0)
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    hsv = np.stack([hue, np.ones_like(hue), np.clip(length / max(top, 1e-6), 0, 1)], axis=-1)
    rgb = hsv_to_rgb(hsv)
    rgb[~np.asarray(mask, dtype=bool)] = UNLABELLED
    return (rgb * 255).astype(np.uint8)


def add_keys(
    fig: Any,
    *,
    semantic: tuple[Any, NDArray[np.integer]] | None = None,
    depth: tuple[Any, float] | None = None,
    offsets: tuple[Any, float] | None = None,
    fontsize: float = 5,
    legend_across: bool = False,
) -> None:
    """What a scene panel's colours mean, drawn beside it.

    Args:
        fig: the figure.
        semantic: (its axes, the trainIds shown): a legend of the classes present.
        depth: (its axes, the colour map's top): a colour bar in pixels of inverse depth.
        offsets: (its axes, the length shown brightest): a colour wheel of directions.
        fontsize: of the keys' text (the labels 1.2× it).
        legend_across: the class legend in rows across the figure's foot, not under its axes.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    from uncertainty_mtl.data.labels import TRAIN_ID_NAMES

    if semantic is not None:
        ax, ids = semantic
        colours = _train_id_colours_float()
        present = [int(i) for i in np.unique(ids) if 0 <= i < len(TRAIN_ID_NAMES)]
        handles = [Patch(color=colours[i], label=TRAIN_ID_NAMES[i]) for i in present]
        style = {"fontsize": fontsize, "frameon": False, "handlelength": 1}
        if legend_across:
            fig.legend(handles=handles, loc="outside lower center", ncol=8, **style)
        else:
            ax.legend(
                handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, **style
            )
    if depth is not None:
        ax, top = depth
        bar = fig.colorbar(
            ScalarMappable(Normalize(0, top), "magma"),
            ax=ax,
            orientation="horizontal",
            fraction=0.08,
            pad=0.02,
        )
        bar.set_label("inverse depth [px]; grey: no label", fontsize=1.2 * fontsize)
        bar.ax.tick_params(labelsize=fontsize)
    if offsets is not None:
        ax, top = offsets
        n = 33
        yy, xx = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
        inside = np.hypot(xx, yy) <= 1
        wheel = colour_offsets(np.stack([xx, yy]) * top, inside, max_length=top)
        key = ax.inset_axes((0.76, 0.62, 0.22, 0.36))
        key.imshow(wheel, interpolation="nearest")
        key.set_xticks([])
        key.set_yticks([])
        ax.set_xlabel(
            f"hue: direction, brightness: length\n(to {top:.3g} px); grey: not an instance",
            fontsize=fontsize,
        )


def _train_id_colours_float() -> NDArray[np.floating]:
    """The Cityscapes colours of the 19 trainIds in ``[0, 1]`` (for matplotlib)."""
    from uncertainty_mtl.data.labels import train_id_colours

    return np.asarray(train_id_colours()[:19], dtype=np.float64) / 255


def prediction_strip(
    image: NDArray[np.uint8],
    outputs: dict[str, NDArray[Any]],
    targets: dict[str, NDArray[Any]],
) -> NDArray[np.uint8]:
    """One RGB strip ``[H, W·k, 3]`` for TensorBoard: the input, then per task its prediction
    beside its ground truth: semantics (Cityscapes colours), instance offsets (hue =
    direction) and inverse depth (both on the ground truth's colour scale). Unlabelled pixels
    of the ground truth are black.

    Args:
        image: the input, ``[H, W, 3]``.
        outputs: the predictions for it at its size (``inference.postprocess.upsample_outputs``
            of one image): ``semantic`` trainIds ``[H, W]``, ``instance`` ``[2, H, W]``
            offsets, ``depth`` ``[1, H, W]`` inverse depth.
        targets: its labels (``semantic``, ``instance_offset``, ``instance_mask``,
            ``inverse_depth``, ``depth_mask``).
    """
    tiles = [image]
    if "semantic" in outputs:
        tiles += [
            colour_semantic(outputs["semantic"]),
            colour_semantic(targets["semantic"]),
        ]
    if "instance" in outputs:
        mask = np.asarray(targets["instance_mask"], dtype=bool)
        length = np.hypot(*np.asarray(targets["instance_offset"], dtype=np.float64))
        top = float(np.percentile(length[mask], 99)) if mask.any() else 1.0
        tiles += [
            colour_offsets(outputs["instance"], mask, max_length=top),
            colour_offsets(targets["instance_offset"], mask, max_length=top),
        ]
    if "depth" in outputs:
        mask = np.asarray(targets["depth_mask"], dtype=bool)
        truth = np.asarray(targets["inverse_depth"], dtype=np.float64)
        top = float(np.percentile(truth[mask], 99)) if mask.any() else 1.0
        tiles += [colour_depth(outputs["depth"][0], vmax=top), colour_depth(truth, mask, vmax=top)]
    return np.concatenate(tiles, axis=1)


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
    # Small in inches and large in points: the docs show it a page wide, and its text must
    # stay readable there.
    fig, axes = new_figure(5, nrows=rows, width=2.4, height=1.35)
    titles = ("image", "semantic (trainIds)", "instances", "inverse depth", "instance offsets")
    frames = []
    for index in picks:
        arrays = data.arrays(int(index))
        offset, mask = instance_targets(arrays["instance_ids"])
        depth, valid = inverse_depth_targets(arrays["disparity"], arrays["label_ids"])
        frames.append((index, arrays, offset, mask, depth, valid))
    # one colour scale for every row, so that rows compare
    depths = np.concatenate([f[4][f[5]] for f in frames])
    lengths = np.concatenate([np.hypot(*f[2])[f[3]] for f in frames])
    depth_top = float(np.percentile(depths, 99)) if depths.size else 1.0
    offset_top = float(np.percentile(lengths, 99)) if lengths.size else 1.0
    shown_ids = []
    for row, (index, arrays, offset, mask, depth, valid) in enumerate(frames):
        semantic = semantic_target(arrays["label_ids"])
        shown_ids.append(semantic)
        panels: list[Any] = [
            arrays["image"],
            colour_semantic(semantic),
            colour_instances(np.where(mask, arrays["instance_ids"], 0)),
            colour_depth(depth, valid, vmax=depth_top),
            colour_offsets(offset, mask, max_length=offset_top),
        ]
        for col, panel in enumerate(panels):
            ax = axes[row * 5 + col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=10)
        # the frame's city (its stem's first part): the whole stem does not fit beside a row
        axes[row * 5].set_ylabel(data.samples[index].stem.split("_")[0], fontsize=9)
    last = (rows - 1) * 5
    add_keys(
        fig,
        semantic=(axes[last + 1], np.concatenate([s.ravel() for s in shown_ids])),
        depth=(axes[last + 3], depth_top),
        offsets=(axes[last + 4], offset_top),
        fontsize=8,
        legend_across=True,
    )
    out = Path(out)
    save_figure(fig, out, dpi=150)
    return out
