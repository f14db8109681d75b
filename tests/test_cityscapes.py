"""CityscapesScenes on tiny trees in the exact Cityscapes format, against hand-computed targets."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from uncertainty_mtl.data.cityscapes import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CityscapesScenes,
    SceneDataError,
)
from uncertainty_mtl.data.labels import (
    INSTANCE_TRAIN_IDS,
    TRAIN_ID_NAMES,
    id_to_train_id,
    instance_label_ids,
    label_id_of,
)
from uncertainty_mtl.data.layout import frame_paths, write_frame

# A 4×6 frame. Label ids: 23 sky, 11 building, 26 car, 24 person, 21 vegetation, 7 road,
# 29 caravan, 1 ego vehicle, 255 = license plate (-1 in 8 bits).
LABEL_IDS = np.array(
    [
        [23, 23, 23, 23, 23, 23],
        [11, 26, 26, 26, 24, 21],
        [7, 26, 255, 26, 24, 29],
        [24, 7, 26, 7, 1, 29],
    ]
)
# One car (26000) with a license plate (-1) and a crowd pixel (plain 26); one person (24000) in two
# parts split by an occluder; a caravan instance (29000), not evaluated.
INSTANCE_IDS = np.array(
    [
        [23, 23, 23, 23, 23, 23],
        [11, 26000, 26000, 26000, 24000, 21],
        [7, 26000, -1, 26000, 24000, 29000],
        [24000, 7, 26, 7, 1, 29000],
    ]
)
# 16-bit disparity PNG values p: d = (p - 1) / 256, p = 0 invalid. The sky has one spurious match.
DISPARITY = np.array(
    [
        [0, 0, 300, 0, 0, 0],
        [0, 513, 513, 513, 1025, 0],
        [257, 513, 513, 513, 1025, 0],
        [1, 257, 0, 257, 0, 0],
    ],
    dtype=np.uint16,
)
IGN = 255
EXPECTED_SEMANTIC = np.array(
    [
        [10, 10, 10, 10, 10, 10],
        [2, 13, 13, 13, 11, 8],
        [0, 13, IGN, 13, 11, IGN],
        [11, 0, 13, 0, IGN, IGN],
    ]
)
# Car pixels (1,1) (1,2) (1,3) (2,1) (2,3): centroid x = 2.0, y = 1.4.
# Person pixels (1,4) (2,4) (3,0): centroid x = 8/3, y = 2.0.
EXPECTED_MASK = np.zeros((4, 6), dtype=bool)
EXPECTED_OFFSET = np.zeros((2, 4, 6))
for (r, c), (cx, cy) in {
    (1, 1): (2.0, 1.4),
    (1, 2): (2.0, 1.4),
    (1, 3): (2.0, 1.4),
    (2, 1): (2.0, 1.4),
    (2, 3): (2.0, 1.4),
    (1, 4): (8 / 3, 2.0),
    (2, 4): (8 / 3, 2.0),
    (3, 0): (8 / 3, 2.0),
}.items():
    EXPECTED_MASK[r, c] = True
    EXPECTED_OFFSET[:, r, c] = (cx - c, cy - r)
EXPECTED_DEPTH = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 2, 2, 2, 4, 0],
        [1, 2, 2, 2, 4, 0],
        [0, 1, 0, 1, 0, 0],
    ],
    dtype=np.float32,
)
EXPECTED_DEPTH_MASK = np.array(
    [
        [1, 1, 1, 1, 1, 1],  # sky: labelled, 0, whatever the PNG says
        [0, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 0, 1, 0, 0],
    ],
    dtype=bool,
)
CAMERA = {
    "extrinsic": {
        "baseline": 0.209313,
        "pitch": 0.0,
        "roll": 0.0,
        "x": 1.7,
        "y": 0.0,
        "yaw": 0.0,
        "z": 1.2,
    },
    "intrinsic": {"fx": 2262.52, "fy": 2265.30, "u0": 1096.98, "v0": 513.14},
}


def image_of(h=4, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_tree(root, split="val", stems=("aachen_000000_000019",), **overrides):
    for i, stem in enumerate(stems):
        arrays = {
            "image": image_of(seed=i),
            "label_ids": LABEL_IDS,
            "instance_ids": INSTANCE_IDS,
            "disparity": DISPARITY,
            "camera": CAMERA,
        } | overrides
        write_frame(root, split, stem, **arrays)
    return root


def test_labels_are_the_official_table():
    from cityscapesscripts.helpers.labels import labels

    names = {lab.trainId: lab.name for lab in labels if 0 <= lab.trainId < 19}
    assert tuple(names[i] for i in range(19)) == TRAIN_ID_NAMES
    assert id_to_train_id()[label_id_of("car")] == 13
    assert id_to_train_id()[label_id_of("caravan")] == 255
    assert id_to_train_id()[255] == 255  # license plate
    assert sorted(int(id_to_train_id()[i]) for i in instance_label_ids()) == list(
        INSTANCE_TRAIN_IDS
    )
    assert label_id_of("trailer") not in instance_label_ids()


def test_every_target_equals_the_hand_computed_one(tmp_path):
    data = CityscapesScenes(write_tree(tmp_path), "val")
    assert len(data) == 1
    image, targets = data[0]
    assert set(targets) == {
        "semantic",
        "instance_offset",
        "instance_mask",
        "inverse_depth",
        "depth_mask",
    }
    dtypes = {
        "semantic": torch.int64,
        "instance_offset": torch.float32,
        "instance_mask": torch.bool,
        "inverse_depth": torch.float32,
        "depth_mask": torch.bool,
    }
    for key, dtype in dtypes.items():
        assert targets[key].dtype == dtype, key
    np.testing.assert_array_equal(targets["semantic"].numpy(), EXPECTED_SEMANTIC)
    np.testing.assert_array_equal(targets["instance_mask"].numpy(), EXPECTED_MASK)
    np.testing.assert_allclose(targets["instance_offset"].numpy(), EXPECTED_OFFSET, atol=1e-6)
    np.testing.assert_array_equal(targets["inverse_depth"].numpy(), EXPECTED_DEPTH)
    np.testing.assert_array_equal(targets["depth_mask"].numpy(), EXPECTED_DEPTH_MASK)
    # The image: RGB, [3, H, W], ImageNet-normalised.
    raw = image_of().astype(np.float32) / 255
    expected = (raw - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert data.camera(0)["intrinsic"]["fx"] == 2262.52


def test_only_the_files_of_the_requested_tasks_are_needed(tmp_path):
    write_tree(tmp_path)
    for path in tmp_path.glob("disparity/**/*.png"):
        path.unlink()
    for path in tmp_path.glob("gtFine/**/*instanceIds.png"):
        path.unlink()
    data = CityscapesScenes(tmp_path, "val", tasks=["semantic"])
    _, targets = data[0]
    assert set(targets) == {"semantic"}
    with pytest.raises(SceneDataError, match=r"_disparity\.png"):
        CityscapesScenes(tmp_path, "val", tasks=["depth"])


def test_cache_gives_the_same_samples_and_is_rebuilt_when_a_file_changes(tmp_path):
    root = write_tree(tmp_path / "data", stems=("aachen_000000_000019", "bonn_000001_000002"))
    plain = CityscapesScenes(root, "val")
    cached = CityscapesScenes(root, "val", cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["val"]  # no temp dir left
    for i in range(2):
        (a_img, a_t), (b_img, b_t) = plain[i], cached[i]
        torch.testing.assert_close(a_img, b_img, rtol=0, atol=0)
        for key in a_t:
            torch.testing.assert_close(a_t[key], b_t[key], rtol=0, atol=0)
    cache_file = tmp_path / "cache" / "val" / "label_ids.npy"
    built = cache_file.stat().st_mtime_ns
    CityscapesScenes(root, "val", cache_dir=tmp_path / "cache")  # unchanged sources: reused
    assert cache_file.stat().st_mtime_ns == built
    changed = LABEL_IDS.copy()
    changed[0, 0] = 11
    time.sleep(0.01)
    write_frame(root, "val", "bonn_000001_000002", image=image_of(seed=1), label_ids=changed)
    rebuilt = CityscapesScenes(root, "val", cache_dir=tmp_path / "cache")
    assert rebuilt[1][1]["semantic"][0, 0] == 2  # building
    assert rebuilt[0][1]["semantic"][0, 0] == 10  # sky


def _rewrite_keeping_size_and_mtime(path, array):
    """``path`` rewritten in place as a PNG of ``array``, padded after its end chunk (readers
    stop there) to the old byte size, its old modification time set back."""
    before = path.stat()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) <= before.st_size
    with open(path, "r+b") as f:  # in place: the same inode
        f.write(data + b"\0" * (before.st_size - len(data)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )


def test_a_file_rewritten_with_its_old_size_and_mtime_rebuilds_the_cache(tmp_path):
    root = write_tree(tmp_path / "data", stems=("aachen_000000_000019", "bonn_000001_000002"))
    cache = tmp_path / "cache"
    assert CityscapesScenes(root, "val", cache_dir=cache)[1][1]["semantic"][0, 0] == 10  # sky
    path = frame_paths(root, "val", "bonn_000001_000002", city="bonn")["label_ids"]
    _rewrite_keeping_size_and_mtime(
        path, np.full(LABEL_IDS.shape, 11, np.uint8)
    )  # building everywhere
    from_files = CityscapesScenes(root, "val")[1][1]["semantic"]
    assert (from_files == 2).all()
    from_cache = CityscapesScenes(root, "val", cache_dir=cache)[1][1]["semantic"]
    torch.testing.assert_close(from_cache, from_files, rtol=0, atol=0)


@pytest.mark.parametrize(
    "damage",
    {
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "garbage": lambda p: p.write_bytes(b"not an array"),
        "missing": lambda p: p.unlink(),
        "another shape": lambda p: np.save(p, np.zeros((1, 2, 3), np.uint8)),
    }.items(),
    ids=lambda item: item[0] if isinstance(item, tuple) else "",
)
def test_a_damaged_cache_array_is_rebuilt(tmp_path, damage):
    root = write_tree(tmp_path / "data", stems=("aachen_000000_000019", "bonn_000001_000002"))
    cache = tmp_path / "cache"
    CityscapesScenes(root, "val", cache_dir=cache)
    damage[1](cache / "val" / "label_ids.npy")
    rebuilt = CityscapesScenes(root, "val", cache_dir=cache)
    plain = CityscapesScenes(root, "val")
    for i in range(2):
        for key, value in plain[i][1].items():
            torch.testing.assert_close(rebuilt[i][1][key], value, rtol=0, atol=0)
    assert sorted(p.name for p in cache.iterdir()) == ["val"]


def test_a_cache_damaged_under_a_running_job_is_one_error_naming_it(tmp_path):
    root = write_tree(tmp_path / "data", stems=("aachen_000000_000019",))
    cache = tmp_path / "cache"
    data = CityscapesScenes(root, "val", cache_dir=cache)  # checked, not yet opened
    array = cache / "val" / "label_ids.npy"
    array.write_bytes(array.read_bytes()[:100])
    with pytest.raises(SceneDataError, match=r"label_ids\.npy: the cache was damaged"):
        data[0]


@pytest.mark.parametrize("use_cache", [False, True])
def test_unknown_label_values_are_found_when_the_dataset_is_built(tmp_path, use_cache):
    bad = LABEL_IDS.copy()
    bad[0, 0] = 40
    write_tree(tmp_path / "data", label_ids=bad)
    label_file = frame_paths(tmp_path / "data", "val", "aachen_000000_000019")["label_ids"]
    cache = tmp_path / "cache" if use_cache else None
    with pytest.raises(SceneDataError) as info:
        CityscapesScenes(tmp_path / "data", "val", cache_dir=cache)
    assert str(label_file) in str(info.value) and "[40]" in str(info.value)
    if use_cache:
        assert not (tmp_path / "cache" / "val").exists()
        assert list((tmp_path / "cache").iterdir()) == []  # the failed build left nothing


def test_unknown_instance_values(tmp_path):
    bad = INSTANCE_IDS.copy()
    bad[0, 0] = 40001  # label 40 does not exist
    write_tree(tmp_path, instance_ids=bad)
    with pytest.raises(SceneDataError, match=r"instanceIds\.png: value\(s\) \[40001\]"):
        CityscapesScenes(tmp_path, "val")


def test_missing_root_split_and_empty_split(tmp_path):
    with pytest.raises(SceneDataError, match="no such directory"):
        CityscapesScenes(tmp_path / "nowhere", "val")
    write_tree(tmp_path)
    with pytest.raises(SceneDataError) as info:
        CityscapesScenes(tmp_path, "train")
    assert "leftImg8bit/train: no such directory" in str(info.value) and "['val']" in str(
        info.value
    )
    (tmp_path / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    with pytest.raises(SceneDataError, match="leftImg8bit/test: no images"):
        CityscapesScenes(tmp_path, "test")


def test_missing_files_are_counted_and_named(tmp_path):
    write_tree(tmp_path, stems=("aachen_000000_000019", "aachen_000000_000020"))
    paths = frame_paths(tmp_path, "val", "aachen_000000_000020")
    paths["instance_ids"].unlink()
    paths["disparity"].unlink()
    with pytest.raises(SceneDataError) as info:
        CityscapesScenes(tmp_path, "val")
    message = str(info.value)
    assert "2 file(s) missing" in message
    assert str(paths["instance_ids"]) in message and str(paths["disparity"]) in message


def test_files_of_different_sizes(tmp_path):
    write_tree(tmp_path, disparity=np.zeros((4, 5), dtype=np.uint16))
    path = frame_paths(tmp_path, "val", "aachen_000000_000019")["disparity"]
    with pytest.raises(SceneDataError) as info:
        CityscapesScenes(tmp_path, "val")
    assert str(path) in str(info.value) and "5×4 pixels" in str(info.value)


def test_a_colour_png_in_place_of_label_ids(tmp_path):
    write_tree(tmp_path)
    path = frame_paths(tmp_path, "val", "aachen_000000_000019")["label_ids"]
    Image.fromarray(image_of()).save(path)
    with pytest.raises(SceneDataError, match="expected an 8-bit label-id PNG"):
        CityscapesScenes(tmp_path, "val")


def test_files_written_are_the_official_encodings(tmp_path):
    write_tree(tmp_path)
    paths = frame_paths(tmp_path, "val", "aachen_000000_000019")
    with Image.open(paths["label_ids"]) as img:
        assert img.mode == "L" and np.asarray(img)[2, 2] == 255
    with Image.open(paths["instance_ids"]) as img:
        assert img.mode in ("I;16", "I") and int(np.asarray(img)[1, 1]) == 26000
    with Image.open(paths["disparity"]) as img:
        assert img.mode in ("I;16", "I") and int(np.asarray(img)[1, 4]) == 1025
    assert os.path.getsize(paths["camera"]) > 0


def test_two_processes_building_the_same_cache(tmp_path):
    """Two builders racing (as DDP ranks do) both end with a valid cache."""
    import multiprocessing

    root = write_tree(tmp_path / "data", stems=("aachen_000000_000019", "bonn_000001_000002"))
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        lengths = pool.starmap(_build_and_read, [(str(root), str(tmp_path / "cache"))] * 2)
    assert lengths == [2, 2]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["val"]
    data = CityscapesScenes(root, "val", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(data[0][1]["semantic"].numpy(), EXPECTED_SEMANTIC)


def test_a_builder_keeps_the_cache_another_builder_put_there_first(tmp_path, monkeypatch):
    """The race of two builders, one step at a time: the second checked the cache before the
    first had put it in place, built its own, and then finds the first's, which may be mapped
    by its reader already: it keeps it (removing it failed that reader)."""
    from uncertainty_mtl.data.cache import ArrayCache

    root = write_tree(tmp_path / "data", stems=("aachen_000000_000019", "bonn_000001_000002"))
    first = CityscapesScenes(root, "val", cache_dir=tmp_path / "cache")
    first[1]  # its reader maps the arrays
    image = tmp_path / "cache" / "val" / "image.npy"
    inode = image.stat().st_ino
    real, checks = ArrayCache._matches, []

    def stale_when_first_checked(self, expected):
        checks.append(1)
        return False if len(checks) == 1 else real(self, expected)

    monkeypatch.setattr(ArrayCache, "_matches", stale_when_first_checked)
    second = CityscapesScenes(root, "val", cache_dir=tmp_path / "cache")
    assert len(checks) == 2 and image.stat().st_ino == inode  # the first's cache, untouched
    np.testing.assert_array_equal(first[0][1]["semantic"].numpy(), EXPECTED_SEMANTIC)
    np.testing.assert_array_equal(second[0][1]["semantic"].numpy(), EXPECTED_SEMANTIC)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["val"]  # no build left


def _build_and_read(root, cache):
    data = CityscapesScenes(root, "val", cache_dir=cache)
    data[1]
    return len(data)


def test_a_training_split_has_a_fit_part_and_a_holdout_part_by_city(tmp_path):
    cities = ["aachen", "bochum", "bonn", "cologne", "darmstadt", "erfurt", "hamburg"]
    write_tree(tmp_path, split="train", stems=[f"{c}_000000_000019" for c in cities])
    holdout = CityscapesScenes(tmp_path, "train:holdout", check_values=False)
    fit = CityscapesScenes(tmp_path, "train:fit", check_values=False)
    assert [s.stem.split("_")[0] for s in holdout.samples] == ["erfurt"]  # the sixth city
    assert len(fit) == 6 and "erfurt" not in {s.stem.split("_")[0] for s in fit.samples}
    with pytest.raises(SceneDataError, match="expected 'fit' or 'holdout'"):
        CityscapesScenes(tmp_path, "train:half")


def test_data_sets_of_different_tasks_share_one_cache(tmp_path):
    root = write_tree(tmp_path / "data")
    CityscapesScenes(root, "val", cache_dir=tmp_path / "cache")  # all three tasks
    index = tmp_path / "cache" / "val" / "index.json"
    built = index.stat().st_mtime_ns
    semantic = CityscapesScenes(root, "val", tasks=["semantic"], cache_dir=tmp_path / "cache")
    depth = CityscapesScenes(root, "val", tasks=["depth"], cache_dir=tmp_path / "cache")
    assert index.stat().st_mtime_ns == built  # reused, not rebuilt for a subset of fields
    assert set(semantic[0][1]) == {"semantic"}
    np.testing.assert_array_equal(depth[0][1]["inverse_depth"].numpy(), EXPECTED_DEPTH)


@pytest.mark.parametrize("part", ["train:fit", "train:holdout"])
def test_a_part_split_reads_cameras_and_caches_like_its_files(city, tmp_path, part):
    plain = CityscapesScenes(city, part)
    cached = CityscapesScenes(city, part, cache_dir=tmp_path / "cache")
    assert len(plain) == len(cached) > 0
    assert (tmp_path / "cache" / part.replace(":", ".") / "index.json").is_file()
    for i in range(len(plain)):
        image, targets = plain[i]
        image_c, targets_c = cached[i]
        assert torch.equal(image, image_c)
        assert targets.keys() == targets_c.keys()
        assert all(torch.equal(targets[k], targets_c[k]) for k in targets)
        sample = plain.samples[i]
        camera_file = frame_paths(city, "train", sample.stem, city=sample.image.parent.name)
        assert plain.camera(i) == json.loads(camera_file["camera"].read_text())


def test_the_scene_data_set_is_importable_from_the_data_package():
    import uncertainty_mtl.data as data
    from uncertainty_mtl.data import CityscapesScenes as Lazy

    assert Lazy is CityscapesScenes and data.SceneDataError is SceneDataError
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        data.Nothing  # noqa: B018


def test_a_root_given_relative_or_absolute_shares_one_cache(tmp_path, monkeypatch):
    # a study prepares the cache with the preset's relative root; each run reads its data
    # through the absolute root its config.yaml stores: one cache, not a rebuild per run
    write_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    CityscapesScenes("data", "val", cache_dir="cache")
    index = tmp_path / "cache" / "val" / "index.json"
    built = index.stat().st_mtime_ns
    CityscapesScenes(tmp_path / "data", "val", cache_dir=tmp_path / "cache")
    assert index.stat().st_mtime_ns == built
