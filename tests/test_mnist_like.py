"""IDX files: round trips through the real format, and broken files rejected by name."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from uncertainty_mtl.data.mnist_like import (
    IdxFormatError,
    load_digits_splits,
    load_fashion_mnist_splits,
    read_idx,
    write_idx,
)
from uncertainty_mtl.errors import DataError


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_idx_round_trip(tmp_path, name, dtype):
    array = (np.arange(2 * 3 * 5) * 7 % 251).astype(dtype).reshape(2, 3, 5)
    path = tmp_path / name
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_the_standard_one(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 1])  # magic 0x00000801 of MNIST label files
    assert struct.unpack(">I", raw[4:8]) == (3,)
    assert raw[8:] == bytes([3, 1, 4])


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x08\x03\x00\x00" + b"\x00" * 12, "bad magic number"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad magic number"),
        (b"\x00\x00", "too short"),
        (_idx_bytes(np.zeros((4, 2, 2)))[:-3], "truncated"),
        (_idx_bytes(np.zeros((4, 2, 2))) + b"\x00", "trailing bytes"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
    ],
)
def test_broken_idx_files_are_rejected_with_their_name(tmp_path, content, message):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(IdxFormatError) as info:
        read_idx(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_truncated_gzip_is_rejected_with_its_name(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((10, 28, 28))))[:-20])
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte\.gz"):
        read_idx(path)


def write_fashion(directory, n_train=60, n_test=20, *, gz=False, labels_train=None):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (
            labels_train if labels_train is not None else np.arange(n_train, dtype=np.uint8) % 10
        ),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for stem, array in files.items():
        write_idx(directory / f"{stem}{suffix}", array)
    return files


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_splits(tmp_path, gz):
    files = write_fashion(tmp_path, gz=gz)
    splits = load_fashion_mnist_splits(tmp_path, val_fraction=0.25)
    assert splits.image_size == 28 and splits.num_classes == 10
    assert len(splits.train[1]) == 45 and len(splits.val[1]) == 15 and len(splits.test[1]) == 20
    assert splits.train[0].shape[1:] == (1, 28, 28) and splits.train[0].dtype == np.float32
    np.testing.assert_allclose(
        splits.test[0][:, 0] * 255, files["t10k-images-idx3-ubyte"], atol=1e-4
    )
    # The validation images come out of the training file, not the test file.
    train_rows = {row.tobytes() for row in files["train-images-idx3-ubyte"]}
    val_rows = {np.round(row[0] * 255).astype(np.uint8).tobytes() for row in splits.val[0]}
    assert val_rows <= train_rows


def test_fashion_mnist_mismatched_counts_and_missing_files(tmp_path):
    write_fashion(tmp_path, labels_train=np.zeros(59, dtype=np.uint8))
    with pytest.raises(IdxFormatError) as info:
        load_fashion_mnist_splits(tmp_path)
    message = str(info.value)
    assert "60 images" in message and "59 labels" in message
    assert "train-labels-idx1-ubyte" in message
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(60, dtype=np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist_splits(tmp_path)


def test_fashion_mnist_labels_out_of_range(tmp_path):
    write_fashion(tmp_path, labels_train=np.full(60, 12, dtype=np.uint8))
    with pytest.raises(IdxFormatError, match=r"labels must lie in 0\.\.9"):
        load_fashion_mnist_splits(tmp_path)


def test_digits_splits_are_disjoint_stratified_and_fixed():
    a, b = load_digits_splits(), load_digits_splits()
    sizes = [len(s[1]) for s in (a.train, a.val, a.test)]
    assert sum(sizes) == 1797 and sizes == [1149, 288, 360]
    np.testing.assert_array_equal(a.test[0], b.test[0])
    assert a.train[0].min() >= 0 and a.train[0].max() <= 1
    rows = [{r.tobytes() for r in split[0]} for split in (a.train, a.val, a.test)]
    # The data set has a few exact duplicate images; the splits share at most those.
    assert len(rows[0] & rows[2]) <= 3 and len(rows[1] & rows[2]) <= 3
    for split in (a.train, a.val, a.test):
        assert set(np.unique(split[1])) == set(range(10))
