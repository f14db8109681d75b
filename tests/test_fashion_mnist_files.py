"""Fashion-MNIST's real files, where Debian's or Ubuntu's ``dataset-fashion-mnist`` installed
them (``.ci/run`` installs the package; these tests skip on a machine where it cannot)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uncertainty_mtl.cli import main
from uncertainty_mtl.data.mnist_like import (
    FASHION_MNIST_DIR,
    default_fashion_mnist_dir,
    load_fashion_mnist_splits,
    read_idx,
)

pytestmark = pytest.mark.skipif(
    default_fashion_mnist_dir() is None,
    reason=f"no Fashion-MNIST in {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist",
)


def test_the_installed_files_are_fashion_mnist():
    root = Path(FASHION_MNIST_DIR)
    train = read_idx(root / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(root / "train-labels-idx1-ubyte.gz")
    test = read_idx(root / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    assert train.shape == (60000, 28, 28) and train.dtype == np.uint8
    assert test.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    # read once from the package's files (0.0~git20200523.55506a9-1) and written down here
    assert train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # an ankle boot first
    assert test_labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert int(train[0].astype(np.int64).sum()) == 76247 and np.count_nonzero(train[0]) == 433
    assert int(test[0].astype(np.int64).sum()) == 33456


def test_the_study_splits_are_50000_10000_10000_stratified():
    splits = load_fashion_mnist_splits(FASHION_MNIST_DIR)
    assert [len(s[1]) for s in (splits.train, splits.val, splits.test)] == [50000, 10000, 10000]
    assert np.bincount(splits.val[1]).tolist() == [1000] * 10
    assert splits.image_size == 28 and splits.train[0].dtype == np.float32


def test_the_study_finds_them_without_data_dir_and_trains(tmp_path):
    out = tmp_path / "out"
    args = ["reproduce", "two-task", "--dataset", "fashion-mnist", "--preset", "smoke"]
    assert main([*args, "--seeds", "1", "--workers", "1", "--quiet", "--out", str(out)]) == 0
    results = json.loads((out / "two_task.json").read_text())
    assert results["dataset"] == "fashion-mnist" and results["image_size"] == 28
    assert f"data_dir: {FASHION_MNIST_DIR}" in (out / "config.yaml").read_text()
    # every row trained on the real images: 64 of them, batch 16, 2 epochs
    runs = sorted(out.glob("runs/*/seed0/results.json"))
    assert runs and all(json.loads(r.read_text())["training"]["steps"] == 8 for r in runs)
