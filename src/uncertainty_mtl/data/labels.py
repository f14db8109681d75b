"""Cityscapes label definitions, taken from the official ``cityscapesscripts`` package.

Encodings of the files (what the official tools write):

* ``*_gtFine_labelIds.png``: 8-bit label ids 0..33. The official converter does not draw
  license-plate polygons (id -1), so the car shows through; a file that stores -1 anyway holds
  255 there, which we read as the license plate.
* ``*_gtFine_instanceIds.png``: 32-bit (mode ``I``). Pixels of an individual instance hold
  ``labelId * 1000 + k``; every other pixel holds its plain label id, including crowd or group
  regions of instance classes (``car`` group = 26): those are not instances. -1 is read as the
  license plate, like 255 in ``labelIds``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from uncertainty_mtl.tasks.semantic import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "INSTANCE_TRAIN_IDS",
    "LICENSE_PLATE_IN_UINT8",
    "LICENSE_PLATE_IN_UINT16",
    "NUM_CLASSES",
    "SKY_LABEL_ID",
    "TRAIN_ID_NAMES",
    "id_to_train_id",
    "instance_ids_from_uint16",
    "instance_ids_to_uint16",
    "instance_label_ids",
    "known_label_ids",
    "label_id_of",
    "train_id_colours",
]

NUM_CLASSES = 19
#: -1 (license plate) as it appears in an 8-bit labelIds PNG.
LICENSE_PLATE_IN_UINT8 = 255
#: -1 (license plate) as a 16-bit instanceIds PNG (and the array cache) stores it.
LICENSE_PLATE_IN_UINT16 = 65535


def instance_ids_to_uint16(ids: NDArray[Any]) -> NDArray[np.uint16]:
    """Instance ids (-1 = license plate) as a 16-bit instanceIds PNG stores them."""
    ids = np.asarray(ids).astype(np.int64)
    return np.where(ids < 0, LICENSE_PLATE_IN_UINT16, ids).astype(np.uint16)


def instance_ids_from_uint16(stored: NDArray[Any]) -> NDArray[np.int32]:
    """:func:`instance_ids_to_uint16`'s inverse: int32 ids, -1 for the license plate."""
    ids = np.asarray(stored).astype(np.int32)
    ids[ids == LICENSE_PLATE_IN_UINT16] = -1
    return ids


def _labels() -> Any:
    from cityscapesscripts.helpers.labels import labels

    return labels


@cache
def id_to_train_id() -> NDArray[np.uint8]:
    """A 256-entry lookup table, label id -> trainId (255 for ignored and unknown ids).

    Index 255 is the license plate (-1 stored in 8 bits).
    """
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in _labels():
        if label.id >= 0 and 0 <= label.trainId < NUM_CLASSES and not label.ignoreInEval:
            table[label.id] = label.trainId
    return table


@cache
def known_label_ids() -> frozenset[int]:
    """Every label id of the official table, with -1 (license plate)."""
    return frozenset(int(label.id) for label in _labels())


@cache
def instance_label_ids() -> frozenset[int]:
    """Label ids whose individual instances are evaluated: person, rider, car, truck, bus,
    train, motorcycle, bicycle (caravan and trailer have instances but are ignored)."""
    return frozenset(
        int(label.id) for label in _labels() if label.hasInstances and not label.ignoreInEval
    )


# The official names and ids, spelled out for readers (a test checks them against the package).
TRAIN_ID_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
SKY_LABEL_ID = 23
#: trainIds of the classes with evaluated instances.
INSTANCE_TRAIN_IDS: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)


def label_id_of(name: str) -> int:
    """The official label id of a class name, e.g. ``label_id_of("car") == 26``."""
    for label in _labels():
        if label.name == name:
            return int(label.id)
    raise KeyError(f"no Cityscapes label named {name!r}")


@cache
def train_id_colours() -> NDArray[np.uint8]:
    """``[256, 3]`` RGB colour per trainId (official colours; black for 255)."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for label in _labels():
        if 0 <= label.trainId < NUM_CLASSES and not label.ignoreInEval:
            colours[label.trainId] = label.color
    return colours
