"""File names of the Cityscapes layout, and a writer of frames in its encodings.

Used by the Tiny Cityscapes converter and the synthetic city; every file is written atomically
(temporary file, then rename), so an interrupted writer never leaves a half-written file.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from uncertainty_mtl._io import atomic_write, write_text
from uncertainty_mtl.data.labels import instance_ids_to_uint16
from uncertainty_mtl.errors import DataError

__all__ = [
    "DATA_MARKERS",
    "FRAME_FILES",
    "check_complete",
    "frame_paths",
    "read_json_object",
    "read_marker",
    "write_frame",
    "write_png",
]

#: The markers of data sets we write, and the command that finishes each.
DATA_MARKERS = {"synth.json": "umtl data synth", "umtl_tiny.json": "umtl data tiny"}

#: field -> (top directory, file suffix)
FRAME_FILES = {
    "image": ("leftImg8bit", "_leftImg8bit.png"),
    "label_ids": ("gtFine", "_gtFine_labelIds.png"),
    "instance_ids": ("gtFine", "_gtFine_instanceIds.png"),
    "disparity": ("disparity", "_disparity.png"),
    "camera": ("camera", "_camera.json"),
}


def frame_paths(
    root: str | os.PathLike[str], split: str, stem: str, *, city: str | None = None
) -> dict[str, Path]:
    """Paths of a frame's files; the city defaults to the stem's first ``_``-separated part."""
    city = city or stem.split("_")[0]
    return {
        field: Path(root) / top / split / city / f"{stem}{suffix}"
        for field, (top, suffix) in FRAME_FILES.items()
    }


def write_png(
    path: str | os.PathLike[str], array: NDArray[Any], *, compress_level: int = 1
) -> None:
    """uint8 ``[H, W, 3]`` -> RGB, uint8 ``[H, W]`` -> 8-bit grey, uint16 ``[H, W]`` -> 16-bit grey.

    PNG bytes depend only on the array and ``compress_level``, so equal arrays give equal files.
    Level 1 encodes twice as fast as level 6 for files about 10% larger (measured on the
    synthetic city), which is what the generator needs.
    """
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint8 and array.ndim in (2, 3):
        image = Image.fromarray(array)
    elif array.dtype == np.uint16 and array.ndim == 2:
        image = Image.fromarray(array)  # mode I;16
    else:
        raise ValueError(f"{path}: cannot write a {array.dtype} array of shape {array.shape}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def write_frame(
    root: str | os.PathLike[str],
    split: str,
    stem: str,
    *,
    image: NDArray[np.uint8],
    label_ids: NDArray[np.integer] | None = None,
    instance_ids: NDArray[np.integer] | None = None,
    disparity: NDArray[np.uint16] | None = None,
    camera: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Writes the given files of one frame in the official encodings.

    Args:
        image: RGB ``[H, W, 3]``.
        label_ids: official label ids ``[H, W]`` (-1 or 255 = license plate), as 8-bit PNG.
        instance_ids: ``labelId*1000 + k`` or plain label ids (-1 = license plate), as 16-bit PNG.
        disparity: the 16-bit PNG values ``p`` (``d = (p - 1) / 256``, 0 = invalid).
        camera: the ``camera.json`` content.

    Returns:
        The paths written.
    """
    paths = frame_paths(root, split, stem)
    written = {"image": paths["image"]}
    write_png(paths["image"], image)
    if label_ids is not None:
        write_png(paths["label_ids"], np.asarray(label_ids).astype(np.int64).astype(np.uint8))
        written["label_ids"] = paths["label_ids"]
    if instance_ids is not None:
        write_png(paths["instance_ids"], instance_ids_to_uint16(instance_ids))
        written["instance_ids"] = paths["instance_ids"]
    if disparity is not None:
        write_png(paths["disparity"], np.asarray(disparity, dtype=np.uint16))
        written["disparity"] = paths["disparity"]
    if camera is not None:
        write_text(paths["camera"], json.dumps(camera, indent=2) + "\n")
        written["camera"] = paths["camera"]
    return written


def read_json_object(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A JSON file holding an object; unreadable or anything else: :class:`DataError` naming
    the file as ``what``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable {what} ({err})") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a {what} (expected a JSON object)")
    return data


def read_marker(root: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """A data set's marker file (see :data:`DATA_MARKERS`)."""
    return read_json_object(Path(root) / name, "marker of ours")


def check_complete(root: str | os.PathLike[str]) -> None:
    """Refuses a data set of ours whose writer has not finished: its marker says
    ``"complete": false`` until the last file is written (older markers, without the key, are
    taken as complete)."""
    for name, command in DATA_MARKERS.items():
        if (Path(root) / name).is_file() and read_marker(root, name).get("complete") is False:
            raise DataError(
                f"{Path(root) / name}: the data set at {root} is incomplete (its writer was "
                f"interrupted); run `{command}` again to finish it"
            )
