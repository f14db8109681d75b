"""The files of a Cityscapes-layout split, found and decoded: real Cityscapes, Tiny Cityscapes
and the synthetic city.

``root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` and, for the same stem,
``gtFine/.../_gtFine_labelIds.png`` and ``_gtFine_instanceIds.png``,
``disparity/.../_disparity.png`` and ``camera/.../_camera.json``. Only the files the requested
tasks need must exist.

Problems are found when the data set is built: a missing split, an image without one of its
files, files of different sizes, label values that the official table does not know. Each is a
:class:`SceneDataError` naming the file and what was expected.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from uncertainty_mtl.data.labels import (
    LICENSE_PLATE_IN_UINT8,
    LICENSE_PLATE_IN_UINT16,
    instance_ids_from_uint16,
    known_label_ids,
)
from uncertainty_mtl.data.layout import check_complete, frame_paths, read_json_object
from uncertainty_mtl.errors import DataError
from uncertainty_mtl.tasks.registry import SCENE_TASKS

__all__ = [
    "FIELDS_FOR_TASK",
    "SceneDataError",
    "SceneFiles",
    "check_sizes",
    "fields_for",
    "find_scene_files",
    "open_image",
    "read_camera",
    "read_png",
    "read_scene_arrays",
]

#: The decoded arrays each task needs (``image`` is always read).
FIELDS_FOR_TASK = {
    "semantic": ("label_ids",),
    "instance": ("instance_ids",),
    "depth": ("disparity", "label_ids"),
}


class SceneDataError(DataError):
    """A scene data set on disk is not what the Cityscapes layout requires."""


@dataclass(frozen=True)
class SceneFiles:
    """The files of one frame (``None`` for files the tasks do not need)."""

    stem: str
    image: Path
    label_ids: Path | None = None
    instance_ids: Path | None = None
    disparity: Path | None = None
    camera: Path | None = None

    def path(self, field: str) -> Path:
        path = getattr(self, field)
        assert isinstance(path, Path), field
        return path


def read_camera(path: Path) -> dict[str, Any]:
    """A ``camera.json``; unreadable or not a JSON object: :class:`SceneDataError`."""
    try:
        return read_json_object(path, "camera JSON")
    except DataError as err:
        raise SceneDataError(str(err)) from err


def fields_for(tasks: Sequence[str]) -> tuple[str, ...]:
    """The decoded arrays ``tasks`` need, image first."""
    unknown = [t for t in tasks if t not in SCENE_TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {SCENE_TASKS}, got {list(tasks)}")
    fields = ["image"]
    for task in SCENE_TASKS:
        if task in tasks:
            fields += [f for f in FIELDS_FOR_TASK[task] if f not in fields]
    return tuple(fields)


def find_scene_files(
    root: str | os.PathLike[str],
    split: str,
    *,
    fields: Sequence[str] = ("image", "label_ids", "instance_ids", "disparity"),
    camera: bool = False,
) -> list[SceneFiles]:
    """Lists a split's frames and checks that each has the files ``fields`` need.

    ``split`` may name a part of a split: ``"train:holdout"`` is every sixth city of ``train``
    (in name order, starting with the sixth; the last city when there are fewer than six) and
    ``"train:fit"`` the others. Choices (weights, checkpoints) are made on a holdout when the
    reported split is val, as on Cityscapes, whose test labels are not public.

    Raises:
        SceneDataError: missing root or split, an empty split, missing files (the first five
            named, and how many), all naming the paths.
    """
    root = Path(root)
    split, _, part = split.partition(":")
    if part not in ("", "fit", "holdout"):
        raise SceneDataError(f"split part {part!r}: expected 'fit' or 'holdout' (e.g. train:fit)")
    images_dir = root / "leftImg8bit" / split
    if not root.is_dir():
        raise SceneDataError(f"{root}: no such directory (expected a Cityscapes-layout root)")
    check_complete(root)
    if not images_dir.is_dir():
        found = sorted(p.name for p in (root / "leftImg8bit").glob("*") if p.is_dir())
        raise SceneDataError(
            f"{images_dir}: no such directory; splits under {root / 'leftImg8bit'}: {found}"
        )
    images = sorted(images_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise SceneDataError(
            f"{images_dir}: no images; expected {{city}}/{{city}}_{{seq}}_{{frame}}_leftImg8bit.png"
        )
    if part:
        cities = sorted({image.parent.name for image in images})
        held = set(cities[5::6] or cities[-1:])
        images = [i for i in images if (i.parent.name in held) == (part == "holdout")]
        if not images:
            raise SceneDataError(f"{images_dir}: no frames in part {part!r} (cities {cities})")
    wanted = [f for f in fields if f != "image"] + (["camera"] if camera else [])
    samples, missing = [], []
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        paths = frame_paths(root, split, stem, city=image.parent.name)
        for field in wanted:
            if not paths[field].is_file():
                missing.append(str(paths[field]))
        samples.append(SceneFiles(stem, image, **{f: paths[f] for f in wanted}))
    if missing:
        shown = ", ".join(missing[:5])
        more = f", ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise SceneDataError(f"{len(missing)} file(s) missing in {root}: {shown}{more}")
    return samples


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)``; a file that is not a readable image (missing, truncated, corrupt)
    is a :class:`SceneDataError` naming it."""
    try:
        with Image.open(path) as img:
            yield img
    except SceneDataError:
        raise
    except (OSError, SyntaxError, ValueError, zlib.error, Image.DecompressionBombError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise SceneDataError(f"{path}: not a readable PNG ({detail})") from err


def _size(path: Path) -> tuple[int, int]:
    with open_image(path) as img:
        return img.size


def check_sizes(sample: SceneFiles, fields: Sequence[str]) -> tuple[int, int]:
    """``(height, width)`` of the image; every other file of the frame must match it."""
    width, height = _size(sample.image)
    for field in fields:
        if field == "image":
            continue
        size = _size(sample.path(field))
        if size != (width, height):
            raise SceneDataError(
                f"{sample.path(field)}: {size[0]}×{size[1]} pixels, but its image "
                f"{sample.image} is {width}×{height}"
            )
    return height, width


_UNIT_MODES = {"L", "P"}  # 8-bit
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L"}  # 16-bit (or Pillow's 32-bit view of it)


def read_png(path: Path, field: str) -> NDArray[Any]:
    with open_image(path) as img:
        mode = img.mode
        if field == "image":
            if mode not in ("RGB", "RGBA", "L"):
                raise SceneDataError(f"{path}: image mode {mode}, expected an RGB PNG")
            return np.array(img.convert("RGB"))
        if field == "label_ids" and mode not in _UNIT_MODES:
            raise SceneDataError(
                f"{path}: mode {mode}, expected an 8-bit label-id PNG (is it a _color.png?)"
            )
        if field == "instance_ids" and mode not in _WIDE_MODES | _UNIT_MODES:
            raise SceneDataError(f"{path}: mode {mode}, expected a 16-bit grayscale PNG")
        if field == "disparity" and mode not in _WIDE_MODES:
            # 8 bits cannot hold p = 256·d + 1: an 8-bit file is a preview, not the data.
            raise SceneDataError(f"{path}: mode {mode}, expected a 16-bit disparity PNG")
        return np.array(img)


@cache
def _known_uint8() -> NDArray[np.bool_]:
    """Which 8-bit values a labelIds PNG may hold (255 = license plate, -1)."""
    table = np.zeros(256, dtype=bool)
    for i in known_label_ids():
        table[i if i >= 0 else LICENSE_PLATE_IN_UINT8] = True
    return table


def _check_values(path: Path, field: str, array: NDArray[Any]) -> None:
    if field == "label_ids":
        values = np.unique(array)
        bad = values[~_known_uint8()[values]]
    elif field == "instance_ids":
        values = np.unique(array.astype(np.int64))
        plain = values[(values < 1000) & (values != -1)]
        grouped = values[values >= 1000]
        grouped = grouped[grouped != LICENSE_PLATE_IN_UINT16]
        bad = np.concatenate(
            [
                plain[~np.isin(plain, list(known_label_ids()))],
                grouped[~np.isin(grouped // 1000, list(known_label_ids()))],
            ]
        )
    else:
        return
    if bad.size:
        raise SceneDataError(
            f"{path}: value(s) {bad[:10].tolist()} are not label ids of the official Cityscapes "
            "table" + (" (nor labelId*1000+k)" if field == "instance_ids" else "")
        )


def read_scene_arrays(sample: SceneFiles, fields: Sequence[str]) -> dict[str, NDArray[Any]]:
    """Decodes and checks one frame's files.

    Returns:
        ``image`` uint8 ``[H, W, 3]``, ``label_ids`` uint8 ``[H, W]`` (255 = license plate),
        ``instance_ids`` int32 ``[H, W]`` (-1 = license plate) and ``disparity`` uint16
        ``[H, W]`` (the raw PNG value ``p``), for the fields asked.
    """
    out: dict[str, NDArray[Any]] = {}
    for field in fields:
        path = sample.image if field == "image" else sample.path(field)
        array = read_png(path, field)
        _check_values(path, field, array)
        if field == "instance_ids":
            array = instance_ids_from_uint16(array)
        elif field == "disparity":
            array = array.astype(np.uint16)
        out[field] = array
    shapes = {f: a.shape[:2] for f, a in out.items()}
    if len(set(shapes.values())) > 1:
        raise SceneDataError(f"files of {sample.image} differ in size: {shapes}")
    return out
