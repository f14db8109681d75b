"""Scene predictions at any size, and ``umtl predict``.

A network trained at one resolution predicts at that resolution; its outputs are brought to the
size of the ground truth or of the user's image the way the official benchmark upsamples
predictions: labels (and instance ids) by nearest neighbour, offsets and disparity bilinearly and
multiplied by the scale (offsets by ``kx``, ``ky``; disparity, a horizontal distance, by ``kx``).
Instances are clustered at the network's resolution, where the votes were made.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from uncertainty_mtl._io import claim_directory, write_json
from uncertainty_mtl.data.cityscapes import IMAGENET_MEAN, IMAGENET_STD
from uncertainty_mtl.data.labels import INSTANCE_TRAIN_IDS, id_to_train_id
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.inference.clustering import InstanceMap
from uncertainty_mtl.inference.postprocess import instances_from_outputs, upsample_outputs
from uncertainty_mtl.models.multitask import MultiTaskNet

__all__ = [
    "Predictor",
    "ScenePrediction",
    "predict_files",
]

#: The file that marks a directory as ``umtl predict`` output.
_MARKER = "umtl_predict.json"


@dataclass
class ScenePrediction:
    """One image's predictions at the image's size (``None`` for tasks the network lacks)."""

    semantic: NDArray[np.int64] | None
    offsets: NDArray[np.float32] | None
    inverse_depth: NDArray[np.float32] | None
    instances: InstanceMap | None


class Predictor:
    """A trained network, ready to predict on images of any size (``engine.runs.predictor``
    builds one from a run directory).

    Args:
        model: the network, in eval mode.
        input_size: the size the network was trained at (``None``: any size).
        depth_scale: the network predicts inverse depth in units of ``depth_scale`` pixels.
        device: torch device of ``model``.
        cluster_method: how instances are clustered (see ``inference.clustering``).
    """

    def __init__(
        self,
        model: MultiTaskNet,
        *,
        input_size: Sequence[int] | None = None,
        depth_scale: float = 1.0,
        device: str | torch.device = "cpu",
        cluster_method: str = "grid",
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.input_size = None if input_size is None else list(input_size)
        self.depth_scale = depth_scale
        self.cluster_method = cluster_method
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def predict(self, image: NDArray[np.uint8]) -> ScenePrediction:
        """Predictions for an RGB image ``[H, W, 3]`` uint8, at its size."""
        height, width = image.shape[:2]
        x = torch.tensor(image).to(self.device).permute(2, 0, 1)[None]  # a copy: may be read-only
        x = (x.float() / 255 - self._mean) / self._std
        if self.input_size is not None and list(x.shape[-2:]) != list(self.input_size):
            x = F.interpolate(
                x, size=tuple(self.input_size), mode="bilinear", antialias=True, align_corners=False
            )
        outputs = {k: v.float() for k, v in self.model(x).items()}
        if "depth" in outputs:  # the network may have learned other units (data.depth_scale)
            outputs["depth"] = outputs["depth"] / self.depth_scale
        full = upsample_outputs(outputs, (height, width))
        instances = None
        if "semantic" in outputs and "instance" in outputs:
            instances = instances_from_outputs(
                outputs, (height, width), method=self.cluster_method
            )[0]
        return ScenePrediction(
            semantic=full["semantic"][0].cpu().numpy() if "semantic" in full else None,
            offsets=full["instance"][0].cpu().numpy() if "instance" in full else None,
            inverse_depth=full["depth"][0, 0].cpu().numpy() if "depth" in full else None,
            instances=instances,
        )


def _label_ids(train_ids: NDArray[np.int64]) -> NDArray[np.uint8]:
    to_label = np.zeros(256, dtype=np.uint8)
    for label_id, train_id in enumerate(id_to_train_id()[:34]):
        if train_id < 255:
            to_label[train_id] = label_id
    return to_label[train_ids]


def _save_panel(path: Path, image: NDArray[np.uint8], prediction: ScenePrediction) -> None:
    from uncertainty_mtl.reporting.plots import new_figure, save_figure
    from uncertainty_mtl.reporting.visualise import (
        add_keys,
        colour_depth,
        colour_instances,
        colour_offsets,
        colour_semantic,
    )

    panels: list[tuple[str, Any]] = [("input", image)]
    keys: dict[str, Any] = {}
    if prediction.semantic is not None:
        panels.append(("semantic", colour_semantic(prediction.semantic)))
        keys["semantic"] = (len(panels) - 1, prediction.semantic)
    if prediction.instances is not None:
        panels.append(("instances", colour_instances(prediction.instances.ids, min_id=1)))
    if prediction.inverse_depth is not None:
        top = float(np.percentile(prediction.inverse_depth, 99))
        panels.append(("inverse depth", colour_depth(prediction.inverse_depth, vmax=top)))
        keys["depth"] = (len(panels) - 1, top)
    if prediction.offsets is not None:
        mask = (
            np.isin(prediction.semantic, INSTANCE_TRAIN_IDS)
            if prediction.semantic is not None
            else np.ones(image.shape[:2], bool)
        )
        length = np.hypot(*prediction.offsets)
        top = float(np.percentile(length[mask], 99)) if mask.any() else 1.0
        offsets = colour_offsets(prediction.offsets, mask, max_length=top)
        panels.append(("instance offsets", offsets))
        keys["offsets"] = (len(panels) - 1, top)
    aspect = image.shape[0] / image.shape[1]
    fig, axes = new_figure(len(panels), width=3.2, height=max(1.6, 3.2 * aspect + 1.0))
    for ax, (title, panel) in zip(axes, panels, strict=True):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    placed = {kind: (axes[i], value) for kind, (i, value) in keys.items()}
    add_keys(
        fig,
        semantic=placed.get("semantic"),
        depth=placed.get("depth"),
        offsets=placed.get("offsets"),
    )
    save_figure(fig, path, dpi=110)


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    source: str = "",
) -> tuple[list[Path], list[str], list[str]]:
    """``umtl predict``: for each image (or every PNG/JPEG in a directory) writes
    ``<stem>_panel.png`` and, in Cityscapes encodings, ``<stem>_labelIds.png`` (8-bit label ids),
    ``<stem>_instanceIds.png`` (16-bit ``labelId*1000 + k`` on instances, the label id
    elsewhere) and ``<stem>_disparity.png`` (16-bit ``p = 256·d + 1``), for the network's tasks.

    ``out`` must be absent, empty, or an earlier ``umtl predict`` output; two
    images whose outputs would share a name are refused before anything is written.

    Returns:
        The images done, one error message per image that could not be read, and notices: what
        was skipped in a directory (subdirectories, files that are not PNG or JPEG) and images
        resized to the network's input at another aspect ratio (their shapes are squashed).

    Raises:
        RunDirectoryError: ``out`` holds files that are not predictions of ours.
        ConfigError: two inputs have the same stem.
    """
    from uncertainty_mtl.data.layout import write_png
    from uncertainty_mtl.data.targets import encode_disparity

    images: list[Path] = []
    errors: list[str] = []
    notices: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            entries = sorted(item.iterdir())
            found = [p for p in entries if p.is_file() and p.suffix.lower() in _SUFFIXES]
            if not found:
                errors.append(f"{item}: no PNG or JPEG images in this directory")
            images += found
            folders = [p.name for p in entries if p.is_dir()]
            others = [p.name for p in entries if p.is_file() and p not in found]
            if folders:
                notices.append(
                    f"{item}: skipped {len(folders)} subdirectory(ies) ({_some(folders)}); "
                    "name them to predict their images"
                )
            if others:
                notices.append(
                    f"{item}: skipped {len(others)} file(s) that are not PNG or JPEG "
                    f"({_some(others)})"
                )
        else:
            images.append(item)
    stems: dict[str, Path] = {}
    for path in images:
        stem = _stem(path)
        if stem in stems and stems[stem] != path:
            raise ConfigError(
                f"{stems[stem]} and {path} would both write {stem}_*.png into {out}; "
                "predict them into different --out directories"
            )
        stems[stem] = path
    out = claim_directory(out, _MARKER, "umtl predict output", legacy=("predict.json",))
    done = []
    squashed: list[str] = []
    for path in stems.values():
        try:
            with Image.open(path) as img:
                rgb = np.array(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            errors.append(f"{path}: cannot read it as an image ({err})")
            continue
        size = predictor.input_size
        if size is not None and abs(rgb.shape[0] * size[1] / (rgb.shape[1] * size[0]) - 1) > 0.01:
            squashed.append(f"{path.name} {rgb.shape[1]}×{rgb.shape[0]}")
        prediction = predictor.predict(rgb)
        stem = _stem(path)
        if prediction.semantic is not None:
            label_ids = _label_ids(prediction.semantic)
            write_png(out / f"{stem}_labelIds.png", label_ids)
            if prediction.instances is not None:
                ids = prediction.instances.cityscapes_ids()
                write_png(
                    out / f"{stem}_instanceIds.png",
                    np.where(ids > 0, ids, label_ids).astype(np.uint16),
                )
        if prediction.inverse_depth is not None:
            disparity = np.clip(prediction.inverse_depth, 0, None)
            write_png(
                out / f"{stem}_disparity.png",
                encode_disparity(disparity, np.ones(disparity.shape, bool)),
            )
        _save_panel(out / f"{stem}_panel.png", rgb, prediction)
        done.append(path)
    if squashed:
        h, w = predictor.input_size or (1, 1)
        g = math.gcd(w, h)
        notices.append(
            f"{len(squashed)} image(s) of another aspect ratio than the network's input "
            f"({w}×{h}, width × height) were resized to it, which squashes shapes "
            f"({_some(squashed)}); crop them to {w // g}:{h // g} for undistorted predictions"
        )
    summary = {
        "run": source,
        "images": [str(p) for p in done],
        "errors": errors,
        "notices": notices,
    }
    write_json(out / "predict.json", summary)
    return done, errors, notices


_SUFFIXES = (".png", ".jpg", ".jpeg")


def _some(names: Sequence[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (
        f", and {len(names) - shown} more" if len(names) > shown else ""
    )


def _stem(path: Path) -> str:
    return path.stem.removesuffix("_leftImg8bit")
