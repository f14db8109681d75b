"""The Tiny Cityscapes converter, on a Cityscapes-format tree written here."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

import uncertainty_mtl._io as io_module
from uncertainty_mtl.cli import main
from uncertainty_mtl.data.cityscapes import CityscapesScenes, SceneDataError
from uncertainty_mtl.data.layout import frame_paths, write_frame
from uncertainty_mtl.data.tiny import convert_tiny

STEMS = ("aachen_000000_000019", "bochum_000003_000019")


def source_frame(seed, h=16, w=24):
    rng = np.random.default_rng(seed)
    labels = np.full((h, w), 7, dtype=np.int64)
    labels[: h // 4] = 23
    labels[h // 2 :, 4:12] = 26
    instances = labels.copy()
    instances[h // 2 :, 4:12] = 26000 + seed
    disparity = rng.integers(0, 20000, (h, w)).astype(np.uint16)
    disparity[0, :] = 0
    camera = {
        "extrinsic": {"baseline": 0.21, "z": 1.2},
        "intrinsic": {"fx": 2262.0, "fy": 2264.0, "u0": 1096.0, "v0": 512.0},
    }
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "label_ids": labels,
        "instance_ids": instances,
        "disparity": disparity,
        "camera": camera,
    }


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "cityscapes"
    for split in ("train", "val"):
        for i, stem in enumerate(STEMS):
            write_frame(root, split, stem, **source_frame(i))
    return root


def test_every_file_is_downsampled_as_specified(source, tmp_path):
    report = convert_tiny(source, tmp_path / "tiny", factor=4, progress=False)
    assert report.frames == 4 and report.written == 4 * 5 and report.skipped == 0
    assert report.splits == ("train", "val")
    for i, stem in enumerate(STEMS):
        src = source_frame(i)
        out = frame_paths(tmp_path / "tiny", "val", stem)
        image = np.asarray(Image.open(out["image"]))
        area_mean = src["image"].reshape(4, 4, 6, 4, 3).mean(axis=(1, 3))
        assert image.shape == (4, 6, 3)
        assert np.abs(image.astype(float) - area_mean).max() <= 0.5 + 1e-9  # rounded mean
        np.testing.assert_array_equal(
            np.asarray(Image.open(out["label_ids"])), src["label_ids"][2::4, 2::4]
        )
        np.testing.assert_array_equal(
            np.asarray(Image.open(out["instance_ids"])), src["instance_ids"][2::4, 2::4]
        )
        p = src["disparity"][2::4, 2::4].astype(np.float64)
        expected = np.where(p > 0, np.rint((p - 1) / 256 / 4 * 256) + 1, 0)
        np.testing.assert_array_equal(np.asarray(Image.open(out["disparity"])), expected)
        camera = json.loads(out["camera"].read_text())
        assert camera["intrinsic"] == {"fx": 565.5, "fy": 566.0, "u0": 274.0, "v0": 128.0}
        assert camera["extrinsic"] == src["camera"]["extrinsic"]


def test_disparity_is_divided_by_the_factor_through_the_loader(source, tmp_path):
    convert_tiny(source, tmp_path / "tiny", factor=4, progress=False)
    full = CityscapesScenes(source, "val", tasks=["depth"])
    tiny = CityscapesScenes(tmp_path / "tiny", "val", tasks=["depth"])
    d_full = full[0][1]["inverse_depth"].numpy()[2::4, 2::4]
    d_tiny = tiny[0][1]["inverse_depth"].numpy()
    np.testing.assert_allclose(d_tiny, d_full / 4, atol=0.5 / 256)


def test_a_second_run_writes_nothing(source, tmp_path):
    convert_tiny(source, tmp_path / "tiny", factor=4, progress=False)
    files = sorted(p for p in (tmp_path / "tiny").rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = convert_tiny(source, tmp_path / "tiny", factor=4, workers=2, progress=False)
    assert again.written == 0 and again.skipped == 20
    for path in files:
        if path.name != "umtl_tiny.json":
            assert path.stat().st_mtime_ns == stamps[path], path


def test_an_interrupted_file_is_not_left_half_written(source, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_fsync = io_module.os.fsync

    def crash_on_third_file(fd):  # the marker is the first file written
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the bytes are in the temporary file, not yet renamed
        real_fsync(fd)

    monkeypatch.setattr(io_module.os, "fsync", crash_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        convert_tiny(source, tmp_path / "tiny", factor=4, progress=False)
    monkeypatch.setattr(io_module.os, "fsync", real_fsync)
    leftovers = [p for p in (tmp_path / "tiny").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    done = [p for p in (tmp_path / "tiny").rglob("*.*") if p.is_file() and p.suffix != ".json"]
    assert 0 < len(done) < 20
    for path in done:  # what exists is complete
        Image.open(path).load()
    report = convert_tiny(source, tmp_path / "tiny", factor=4, progress=False)
    assert report.written + report.skipped == 20 and report.written > 0
    CityscapesScenes(tmp_path / "tiny", "train")


def test_refuses_other_factor_bad_sizes_and_bad_source(source, tmp_path):
    convert_tiny(source, tmp_path / "tiny", factor=4, progress=False)
    with pytest.raises(SceneDataError, match="factor 4, not 2"):
        convert_tiny(source, tmp_path / "tiny", factor=2, progress=False)
    with pytest.raises(SceneDataError, match="not divisible by the factor 5"):
        convert_tiny(source, tmp_path / "tiny5", factor=5, progress=False)
    with pytest.raises(SceneDataError, match="no leftImg8bit/ directory"):
        convert_tiny(tmp_path / "nothing", tmp_path / "x", progress=False)


def test_cli_default_factor_is_eight(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    write_frame(root, "val", STEMS[0], **source_frame(0, h=16, w=32))
    assert (
        main(["data", "tiny", str(root), str(tmp_path / "tiny"), "--workers", "1", "--quiet"]) == 0
    )
    assert "5 files written" in capsys.readouterr().out
    with Image.open(frame_paths(tmp_path / "tiny", "val", STEMS[0])["image"]) as img:
        assert img.size == (4, 2)


def test_written_files_get_the_usual_permissions(source, tmp_path):
    old = os.umask(0o022)
    try:
        convert_tiny(source, tmp_path / "tiny", factor=4, progress=False)
    finally:
        os.umask(old)
    image = frame_paths(tmp_path / "tiny", "val", STEMS[0])["image"]
    assert stat.S_IMODE(image.stat().st_mode) == 0o644
