"""Small image-classification data for the two-task study: Fashion-MNIST (IDX files) and digits.

Fashion-MNIST is read from the four standard IDX files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
optionally ``.gz``) in a directory the user gives; nothing is downloaded. scikit-learn's bundled
handwritten digits (1,797 images of 8×8, no download) are the default real data set.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from uncertainty_mtl.errors import DataError

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_HOW_TO_GET",
    "IdxFormatError",
    "ImageSplits",
    "default_fashion_mnist_dir",
    "load_digits_splits",
    "load_fashion_mnist_splits",
    "read_idx",
    "write_idx",
]

#: IDX element type code -> big-endian NumPy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


#: Where Debian's and Ubuntu's package ``dataset-fashion-mnist`` installs the four IDX files: the
#: data directory used when none is given.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_HOW_TO_GET = (
    "install Debian's or Ubuntu's package (apt-get install dataset-fashion-mnist, into "
    f"{FASHION_MNIST_DIR}), or put the four IDX files of "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) into a directory and give "
    "it with --data-dir"
)


def default_fashion_mnist_dir() -> str | None:
    """:data:`FASHION_MNIST_DIR` when it holds the training images, else ``None``."""
    stem = FASHION_MNIST_FILES["train"][0]
    root = Path(FASHION_MNIST_DIR)
    found = (root / stem).is_file() or (root / f"{stem}.gz").is_file()
    return FASHION_MNIST_DIR if found else None


class IdxFormatError(DataError):
    """An IDX file is malformed; the message names the file and what was expected."""


def read_idx(path: str | os.PathLike[str]) -> NDArray[np.generic]:
    """Reads an IDX file (gzip-compressed when its name ends in ``.gz``).

    Returns:
        The array with the file's shape, in native byte order.

    Raises:
        IdxFormatError: bad magic number, unknown element type, or a data section that is
            shorter or longer than the header's dimensions say.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises these for truncated/corrupt archives
        raise IdxFormatError(f"{path}: cannot read ({err})") from err
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise IdxFormatError(
            f"{path}: bad magic number 0x{raw[:4].hex()}; an IDX file starts with two zero "
            f"bytes, an element type in {[hex(c) for c in _IDX_DTYPES]} and the number of "
            "dimensions (e.g. 0x00000803 for images, 0x00000801 for labels)"
        )
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise IdxFormatError(f"{path}: truncated header, expected {ndim} dimension sizes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    got = len(raw) - header_end
    if got != expected:
        state = "truncated" if got < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{path}: {state}: header shape {list(shape)} needs {expected} data bytes, found {got}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: NDArray[np.generic]) -> None:
    """Writes ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): c for c, dt in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"{path}: IDX cannot store dtype {array.dtype}")
    header = struct.pack(">HBB", 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


@dataclass(frozen=True)
class ImageSplits:
    """Images in ``[0, 1]`` as float32 ``[N, 1, H, W]`` and int64 labels ``[N]`` per split."""

    name: str
    num_classes: int
    train: tuple[NDArray[np.float32], NDArray[np.int64]]
    val: tuple[NDArray[np.float32], NDArray[np.int64]]
    test: tuple[NDArray[np.float32], NDArray[np.int64]]

    @property
    def image_size(self) -> int:
        return int(self.train[0].shape[-1])

    def subset(self, max_train: int, max_eval: int) -> ImageSplits:
        """The first ``max_train`` training and ``max_eval`` val/test images (for smoke runs)."""
        return ImageSplits(
            self.name,
            self.num_classes,
            (self.train[0][:max_train], self.train[1][:max_train]),
            (self.val[0][:max_eval], self.val[1][:max_eval]),
            (self.test[0][:max_eval], self.test[1][:max_eval]),
        )


def _find_idx(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{data_dir}: missing {stem} (or {stem}.gz); Fashion-MNIST needs the four IDX files "
        f"{[s for pair in FASHION_MNIST_FILES.values() for s in pair]}"
    )


def _split_off_validation(
    images: NDArray[np.float32], labels: NDArray[np.int64], fraction: float, seed: int
) -> tuple[
    tuple[NDArray[np.float32], NDArray[np.int64]], tuple[NDArray[np.float32], NDArray[np.int64]]
]:
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=fraction, random_state=seed, stratify=labels
    )
    return (x_train, y_train), (x_val, y_val)


def load_fashion_mnist_splits(
    data_dir: str | os.PathLike[str], *, val_fraction: float = 1 / 6, split_seed: int = 0
) -> ImageSplits:
    """Fashion-MNIST from IDX files; validation split off the 60,000 training images.

    The 10,000 ``t10k`` images are the test split, used only for reported numbers.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"Fashion-MNIST directory {data_dir} does not exist")
    splits: dict[str, tuple[NDArray[np.float32], NDArray[np.int64]]] = {}
    for split, (image_stem, label_stem) in FASHION_MNIST_FILES.items():
        image_path, label_path = _find_idx(data_dir, image_stem), _find_idx(data_dir, label_stem)
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IdxFormatError(
                f"{image_path}: expected uint8 images [N, H, W], got {images.dtype} "
                f"{list(images.shape)}"
            )
        if labels.ndim != 1:
            raise IdxFormatError(f"{label_path}: expected labels [N], got {list(labels.shape)}")
        if len(images) != len(labels):
            raise IdxFormatError(
                f"{image_path} holds {len(images)} images but {label_path} holds "
                f"{len(labels)} labels"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise IdxFormatError(f"{label_path}: labels must lie in 0..9")
        splits[split] = (
            (images[:, None].astype(np.float32) / 255.0),
            labels.astype(np.int64),
        )
    train, val = _split_off_validation(*splits["train"], val_fraction, split_seed)
    return ImageSplits("fashion-mnist", 10, train, val, splits["test"])


def load_digits_splits(
    *, test_fraction: float = 0.2, val_fraction: float = 0.2, split_seed: int = 0
) -> ImageSplits:
    """scikit-learn's handwritten digits (8×8, values 0..16), in stratified fixed splits.

    The data set has no official test split, so ``test_fraction`` of it is held out (seeded,
    stratified), then ``val_fraction`` of the rest becomes the validation split.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images[:, None] / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    rest, test = _split_off_validation(images, labels, test_fraction, split_seed)
    train, val = _split_off_validation(*rest, val_fraction, split_seed)
    return ImageSplits("digits", 10, train, val, test)
