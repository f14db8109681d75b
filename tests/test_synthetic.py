"""The synthetic city: deterministic, geometrically exact, every class, three kinds of noise."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from uncertainty_mtl.data.cityscapes import CityscapesScenes
from uncertainty_mtl.data.labels import TRAIN_ID_NAMES, label_id_of
from uncertainty_mtl.data.synthetic import (
    SynthConfig,
    city_style,
    generate_city,
    render_frame,
)

CLEAN = SynthConfig(height=96, width=192, seed=3, split_sizes={"train": 6, "val": 6}, noise=False)


@pytest.fixture(scope="module")
def clean_city(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean-city")
    generate_city(root, CLEAN, progress=False)
    return root


def digest(root):
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    config = SynthConfig(
        height=64, width=128, seed=7, split_sizes={"train": 3, "val": 2, "test": 2}
    )
    assert generate_city(tmp_path / "a", config, progress=False) == 7
    assert generate_city(tmp_path / "b", config, workers=2, progress=False) == 7
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert a == b and len(a) == 7 * 5 + 1
    other = SynthConfig(height=64, width=128, seed=8, split_sizes={"train": 3, "val": 2, "test": 2})
    generate_city(tmp_path / "c", other, progress=False)
    assert (
        digest(tmp_path / "c")["leftImg8bit/val/sallow/sallow_000000_000019_leftImg8bit.png"]
        != (a["leftImg8bit/val/sallow/sallow_000000_000019_leftImg8bit.png"])
    )
    assert generate_city(tmp_path / "a", config, progress=False) == 0  # all there: nothing new
    with pytest.raises(ValueError, match="made with"):
        generate_city(tmp_path / "a", other, progress=False)


def test_splits_have_their_own_cities(clean_city):
    cities = {
        s: {p.name for p in (clean_city / "leftImg8bit" / s).iterdir()} for s in ("train", "val")
    }
    assert cities["train"] and cities["val"] and not cities["train"] & cities["val"]


def camera_of(data, i):
    cam = data.camera(i)
    return (
        cam["extrinsic"]["baseline"],
        cam["extrinsic"]["z"],
        cam["intrinsic"]["v0"],
        (cam["intrinsic"]["fx"]),
    )


def test_road_disparity_is_linear_in_the_row(clean_city):
    data = CityscapesScenes(clean_city, "val")
    for i in range(len(data)):
        _, targets = data[i]
        baseline, height, cy, _ = camera_of(data, i)
        road = (targets["semantic"] == 0).numpy() & targets["depth_mask"].numpy()
        rows = np.nonzero(road)[0]
        expected = baseline * (rows + 0.0 - cy) / height  # pixel centres sit on integer rows
        got = targets["inverse_depth"].numpy()[road]
        np.testing.assert_allclose(got, expected, atol=1 / 256)
        assert rows.size > 0.2 * road.size


def test_objects_stand_on_the_ground_with_their_real_height(clean_city):
    data = CityscapesScenes(clean_city, "val")
    ids_seen, on_ground, persons = 0, 0, []
    for i in range(len(data)):
        arrays = data.arrays(i)
        _, targets = data[i]
        baseline, height, cy, f = camera_of(data, i)
        depth = targets["inverse_depth"].numpy()
        ids = arrays["instance_ids"]
        for instance in np.unique(ids[ids >= 1000]):
            pixels = ids == instance
            d = depth[pixels]
            assert d.max() - d.min() < 2 / 256, "an object is a plane at one depth"
            rows = np.nonzero(pixels)[0]
            foot = cy + height * d.mean() / baseline  # the row where the ground has its depth
            assert rows.max() <= foot + 0.5, "no object reaches below its own foot"
            ids_seen += 1
            if rows.max() >= foot - 1.5:
                on_ground += 1
                if instance // 1000 == label_id_of("person"):
                    z = f * baseline / d.mean()
                    persons.append((foot - rows.min() + 0.5) * z / f)
    assert ids_seen >= 20
    assert on_ground / ids_seen > 0.5  # most feet are visible (the rest are occluded)
    persons = np.array(persons)
    assert len(persons) >= 3
    # Persons are 1.55–1.95 m; a whole-pixel extent is ±1 px, and heads may be cut by occluders.
    assert np.median(persons) == pytest.approx(1.75, abs=0.25)
    assert ((persons > 1.2) & (persons < 2.4)).mean() > 0.8


def test_nearer_objects_hide_farther_ones():
    style = city_style(5, "train", 2)
    frame = render_frame(style, np.random.default_rng(11), 128, 256, noise=False)
    f, baseline = frame.camera.f, frame.camera.baseline
    nearest = np.zeros((128, 256))
    covered = np.zeros((128, 256), dtype=bool)
    overlaps = 0
    for obj in frame.objects:
        top, bottom, left, right = obj.bbox
        if obj.mask is None or obj.mask.size == 0:
            continue
        window = (slice(top, bottom), slice(left, right))
        overlaps += int((covered[window] & obj.mask).sum())
        nearest[window] = np.where(
            obj.mask, np.maximum(nearest[window], f * baseline / obj.z), nearest[window]
        )
        covered[window] |= obj.mask
    bonnet = frame.label_ids == label_id_of("ego vehicle")
    check = covered & ~bonnet
    assert overlaps > 50  # the scene has objects in front of objects
    # Nothing farther than the nearest object covering a pixel shows through it. (Something
    # nearer may: a facade hides the part of a wide tree crown that reaches past its line.)
    seen, front = frame.clean_disparity[check], nearest[check]
    assert (seen >= front * (1 - 1e-12)).all()
    assert np.isclose(seen, front, rtol=1e-12).mean() > 0.9


def test_every_listed_class_and_several_instances_appear(tmp_path):
    config = SynthConfig(height=128, width=256, seed=0, split_sizes={"val": 12})
    generate_city(tmp_path, config, progress=False)
    data = CityscapesScenes(tmp_path, "val")
    seen = set()
    for i in range(len(data)):
        _, targets = data[i]
        seen |= set(targets["semantic"].unique().tolist())
        ids = data.arrays(i)["instance_ids"]
        assert len(np.unique(ids[ids >= 1000])) >= 3
        assert (targets["inverse_depth"][targets["semantic"] == 10] == 0).all()  # sky
    names = {TRAIN_ID_NAMES[i] for i in seen if i < 19}
    required = {
        "road",
        "sidewalk",
        "building",
        "pole",
        "traffic sign",
        "vegetation",
        "sky",
        "person",
        "rider",
        "car",
        "bicycle",
    }
    assert required <= names, required - names


def test_each_task_has_its_own_noise():
    style = city_style(1, "train", 0)
    clean = render_frame(style, np.random.default_rng(4), 128, 256, noise=False)
    noisy = render_frame(style, np.random.default_rng(4), 128, 256, noise=True)
    # Labels: only pixels on a boundary of the clean map change, and not all of those.
    changed = clean.instance_ids != noisy.instance_ids
    ids = clean.instance_ids
    boundary = np.zeros_like(changed)
    boundary[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    boundary[:, :-1] |= ids[:, 1:] != ids[:, :-1]
    boundary[1:] |= ids[1:] != ids[:-1]
    boundary[:-1] |= ids[1:] != ids[:-1]
    assert changed.any() and not (changed & ~boundary).any()
    assert changed.sum() < 0.5 * boundary.sum()
    # Disparity: holes beyond the sky and bonnet, and errors that grow with disparity.
    sky_or_bonnet = np.isin(clean.label_ids, [label_id_of("sky"), label_id_of("ego vehicle")])
    holes = (noisy.disparity_png == 0) & ~sky_or_bonnet
    assert 0.03 < holes.sum() / (~sky_or_bonnet).sum() < 0.4
    valid = (noisy.disparity_png > 0) & (clean.disparity_png > 0)
    error = np.abs(noisy.disparity_png[valid].astype(float) - clean.disparity_png[valid]) / 256
    near = clean.clean_disparity[valid] > np.median(clean.clean_disparity[valid])
    assert np.median(error[near]) > np.median(error[~near]) > 0
    # The image: sensor noise.
    assert 1.0 < np.std(noisy.image.astype(float) - clean.image) < 6.0


def test_camera_file_and_size(clean_city):
    data = CityscapesScenes(clean_city, "train")
    image, _ = data[0]
    assert image.shape == (3, 96, 192)
    camera = data.camera(0)
    assert camera["intrinsic"]["fx"] == pytest.approx(1.105 * 192)
    assert json.loads((clean_city / "synth.json").read_text())["noise"] is False


def test_cli_synth_and_show(tmp_path, capsys):
    from uncertainty_mtl.cli import main

    root = tmp_path / "city"
    assert (
        main(
            [
                "data",
                "synth",
                str(root),
                "--split-sizes",
                "val=2",
                "--size",
                "64x128",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert "2 frames written" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "show",
                str(root),
                "--split",
                "val",
                "--n",
                "2",
                "--out",
                str(tmp_path / "show.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "show.png").read_bytes()[:4] == b"\x89PNG"
    for bad in (["--size", "64by128"], ["--split-sizes", "val=two"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["data", "synth", str(root), *bad])
        assert exit_info.value.code == 2
        assert f"{bad[0]}: expected" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "x"), "--split-sizes", "extra=2"]) == 2
    assert "unknown split(s) ['extra']" in capsys.readouterr().err
    assert main(["data", "show", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s.png")]) == 2
    assert "no such directory" in capsys.readouterr().err
