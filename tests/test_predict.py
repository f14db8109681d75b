"""umtl predict, full-resolution evaluation of a network trained small, and output upsampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from uncertainty_mtl.cli import main
from uncertainty_mtl.config import load_config
from uncertainty_mtl.data.synthetic import SynthConfig, generate_city
from uncertainty_mtl.data.tiny import convert_tiny
from uncertainty_mtl.engine import evaluate_run, train
from uncertainty_mtl.inference.postprocess import upsample_outputs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run on a half-size copy (32×64) of a 64×128 synthetic city."""
    root = tmp_path_factory.mktemp("predict")
    full = root / "full"
    generate_city(
        full,
        SynthConfig(height=64, width=128, seed=2, split_sizes={"train": 16, "val": 4, "test": 4}),
        progress=False,
    )
    convert_tiny(full, root / "tiny", factor=2, progress=False)
    config = load_config("smoke", [f"data.root={root / 'tiny'}", "data.synthetic=false"])
    train(config, root / "run", progress=False)
    return root


def test_predict_writes_a_panel_and_the_three_outputs_at_the_images_size(trained, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "street.jpg")
    (images / "nested").mkdir()  # not searched: said, not silently skipped
    Image.fromarray(rgb).save(images / "nested" / "deeper.png")
    (images / "notes.txt").write_text("not an image")
    frame = next((trained / "full" / "leftImg8bit" / "test").glob("*/*.png"))
    code = main(
        [
            "predict",
            str(trained / "run"),
            str(frame),
            str(images),
            str(tmp_path / "missing.png"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1  # one input could not be read ...
    captured = capsys.readouterr()
    assert "missing.png: cannot read it as an image" in captured.err
    assert "2 image(s) predicted" in captured.out  # ... the others were processed
    notes = [line for line in captured.err.splitlines() if line.startswith("umtl: note: ")]
    assert notes == [
        f"umtl: note: {images}: skipped 1 subdirectory(ies) (nested); name them to predict "
        "their images",
        f"umtl: note: {images}: skipped 1 file(s) that are not PNG or JPEG (notes.txt)",
        # trained at 64×32 (2:1): the 128×64 frame is resized without distortion, the 90×50
        # photo is squashed
        "umtl: note: 1 image(s) of another aspect ratio than the network's input (64×32, "
        "width × height) were resized to it, which squashes shapes (street.jpg 90×50); crop "
        "them to 2:1 for undistorted predictions",
    ]
    for stem, size in ((frame.stem.removesuffix("_leftImg8bit"), (128, 64)), ("street", (90, 50))):
        for suffix, mode in (("labelIds", "L"), ("instanceIds", "I;16"), ("disparity", "I;16")):
            with Image.open(tmp_path / "out" / f"{stem}_{suffix}.png") as img:
                assert img.size == size and img.mode == mode, (stem, suffix)
        with Image.open(tmp_path / "out" / f"{stem}_panel.png") as panel:
            assert panel.format == "PNG"
        label_ids = np.asarray(Image.open(tmp_path / "out" / f"{stem}_labelIds.png"))
        assert set(np.unique(label_ids)) <= {
            7,
            8,
            11,
            12,
            13,
            17,
            19,
            20,
            21,
            22,
            23,
            24,
            25,
            26,
            27,
            28,
            31,
            32,
            33,
        }
        instances = np.asarray(Image.open(tmp_path / "out" / f"{stem}_instanceIds.png")).astype(int)
        plain = instances < 1000
        assert (instances[plain] == label_ids[plain]).all()
    summary = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert len(summary["images"]) == 2 and len(summary["errors"]) == 1
    assert summary["notices"] == [n.removeprefix("umtl: note: ") for n in notes]


def test_evaluating_at_full_resolution_upsamples_the_predictions(trained):
    results = evaluate_run(
        trained / "run", split="test", data_root=trained / "full", progress=False
    )
    assert results["resolution"] == [64, 128] and results["input_resolution"] == [32, 64]
    assert results["frames"] == 4 and results["data_root"] == str(trained / "full")
    metrics = results["metrics"]
    assert metrics["semantic_pixels"] > 4 * 64 * 128 * 0.8  # counted at the full size
    assert {"miou", "instance_ap", "instance_mean_error_px", "depth_mean_error_px"} <= set(metrics)
    assert (trained / "run" / "results-test-full.json").is_file()
    # The run's own results (its report split on its own data) are left alone.
    own = json.loads((trained / "run" / "results.json").read_text())
    assert own["resolution"] == [32, 64]


def test_upsampling_scales_offsets_and_disparity_and_takes_labels_by_nearest():
    logits = torch.zeros(1, 19, 2, 3)
    logits[0, 13, 0, :] = 5.0  # top row: car
    logits[0, 0, 1, :] = 5.0  # bottom row: road
    offsets = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 2, 3)
    depth = torch.full((1, 1, 2, 3), 1.5)
    out = upsample_outputs({"semantic": logits, "instance": offsets, "depth": depth}, (8, 6))
    assert out["semantic"].shape == (1, 8, 6)
    assert (out["semantic"][0, :4] == 13).all() and (out["semantic"][0, 4:] == 0).all()
    # kx = 6/3 = 2, ky = 8/2 = 4
    torch.testing.assert_close(out["instance"][0, 0], torch.full((8, 6), 2.0))
    torch.testing.assert_close(out["instance"][0, 1], torch.full((8, 6), -8.0))
    torch.testing.assert_close(out["depth"][0, 0], torch.full((8, 6), 3.0))
    same = upsample_outputs({"depth": depth}, (2, 3))
    torch.testing.assert_close(same["depth"], depth)


def test_the_prediction_strip_puts_each_prediction_beside_its_ground_truth():
    from uncertainty_mtl.data.labels import train_id_colours
    from uncertainty_mtl.reporting.visualise import prediction_strip

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    truth = {
        "semantic": np.full((4, 6), 13),  # car
        "inverse_depth": np.linspace(1, 8, 24).reshape(4, 6),
        "depth_mask": np.ones((4, 6), bool),
    }
    predicted = {"semantic": np.zeros((4, 6), int), "depth": truth["inverse_depth"][None] / 2}
    strip = prediction_strip(image, predicted, truth)
    assert strip.shape == (4, 6 * 5, 3) and strip.dtype == np.uint8
    tiles = np.split(strip, 5, axis=1)
    assert (tiles[0] == image).all()
    assert (tiles[1] == train_id_colours()[0]).all() and (tiles[2] == train_id_colours()[13]).all()
    # depth on the ground truth's scale: the prediction at half the disparity is darker
    assert tiles[3].astype(int).sum() < tiles[4].astype(int).sum()
