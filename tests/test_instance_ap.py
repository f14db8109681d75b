"""Instance AP: hand-computed cases, and equal to the official evaluation's own entry point."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from uncertainty_mtl.inference.clustering import InstanceMap
from uncertainty_mtl.inference.instance_ap import _official, instance_ap

H, W = 64, 128
CAR_A, CAR_B, PERSON = np.s_[20:40, 10:40], np.s_[20:40, 50:80], np.s_[10:50, 90:96]


@pytest.fixture
def ground_truth(tmp_path):
    gt = np.full((H, W), 7, dtype=np.uint16)
    gt[CAR_A], gt[CAR_B], gt[PERSON] = 26000, 26001, 24000
    gt[50:60, 100:120] = 26  # a group of cars (crowd): not an instance
    path = tmp_path / "frame_gtFine_instanceIds.png"
    Image.fromarray(gt).save(path)
    return path


def prediction(*specs):
    ids = np.zeros((H, W), dtype=np.int32)
    classes, confidences = {}, {}
    for k, (region, train_id, confidence) in enumerate(specs, start=1):
        ids[region] = k
        classes[k], confidences[k] = train_id, confidence
    return InstanceMap(ids, classes, confidences)


def test_perfect_prediction_scores_100(ground_truth):
    result = instance_ap(
        [(ground_truth, prediction((CAR_A, 13, 0.9), (CAR_B, 13, 0.8), (PERSON, 11, 0.7)))]
    )
    assert result["instance_ap"] == pytest.approx(100) and result["instance_ap50"] == pytest.approx(
        100
    )
    assert (
        result["instance_ap_per_class"]["car"] == 100
        and result["instance_ap_per_class"]["bus"] is None
    )


def test_missing_and_extra_instances(ground_truth):
    missing = instance_ap([(ground_truth, prediction((CAR_A, 13, 0.9), (PERSON, 11, 0.7)))])
    assert missing["instance_ap_per_class"]["car"] == pytest.approx(50)  # recall 0.5, precision 1
    # A confident false positive ranked first. The official curve has precision [2/3, 1/2, 0, 1]
    # at recall [1, 1/2, 0, 0] and integrates it with step widths [1/4, 1/2, 1/4, 0]:
    # AP = 2/3 · 1/4 + 1/2 · 1/2 = 5/12.
    corner = np.s_[0:10, 0:10]
    first = prediction((corner, 13, 0.99), (CAR_A, 13, 0.9), (CAR_B, 13, 0.8), (PERSON, 11, 0.7))
    extra = instance_ap([(ground_truth, first)])
    assert extra["instance_ap_per_class"]["car"] == pytest.approx(100 * 5 / 12)
    # The same false positive ranked last costs nothing.
    ranked_last = prediction(
        (CAR_A, 13, 0.9), (CAR_B, 13, 0.8), (corner, 13, 0.1), (PERSON, 11, 0.7)
    )
    last = instance_ap([(ground_truth, ranked_last)])
    assert last["instance_ap_per_class"]["car"] == pytest.approx(100)
    # A prediction on the crowd region is not a false positive.
    on_crowd = prediction(
        (np.s_[50:60, 100:120], 13, 0.99), (CAR_A, 13, 0.9), (CAR_B, 13, 0.8), (PERSON, 11, 0.7)
    )
    crowd = instance_ap([(ground_truth, on_crowd)])
    assert crowd["instance_ap_per_class"]["car"] == pytest.approx(100)


def test_a_shifted_mask_scores_the_share_of_thresholds_its_iou_passes(ground_truth):
    # The person shifted down by 10 of its 40 rows: IoU = 30·6 / (50·6) = 0.6. The official code
    # needs IoU > threshold, so of the ten thresholds 0.50:0.05:0.95 it passes 0.50 and 0.55.
    moved = prediction((CAR_A, 13, 0.9), (CAR_B, 13, 0.8), (np.s_[20:60, 90:96], 11, 0.7))
    shifted = instance_ap([(ground_truth, moved)])
    assert shifted["instance_ap_per_class"]["person"] == pytest.approx(20)
    assert shifted["instance_ap50"] == pytest.approx(100)


def test_equal_to_the_official_entry_point(ground_truth, tmp_path, monkeypatch):
    cases = [
        prediction(
            (CAR_A, 13, 0.9),
            (np.s_[22:40, 52:80], 13, 0.6),
            (np.s_[0:8, 0:8], 13, 0.95),
            (np.s_[12:50, 90:95], 11, 0.4),
            (PERSON, 12, 0.3),
        ),
        prediction((np.s_[20:36, 10:40], 13, 0.5), (PERSON, 11, 0.9)),
    ]
    ours = instance_ap([(ground_truth, case) for case in cases])
    # The official script, end to end, on files we write in its documented format.
    official = _official()
    monkeypatch.chdir(tmp_path)  # it writes matches.json into the working directory
    # ... with json.dump(default=__dict__), which fails on NumPy integers: skip its debug files.
    monkeypatch.setattr(official, "writeDict2JSON", lambda *args, **kwargs: None)
    predictions = []
    for i, case in enumerate(cases):
        lines = []
        for k, train_id in case.classes.items():
            Image.fromarray(((case.ids == k) * 255).astype(np.uint8)).save(
                tmp_path / f"p{i}_{k}.png"
            )
            label = {11: 24, 12: 25, 13: 26}[train_id]
            lines.append(f"p{i}_{k}.png {label} {case.confidences[k]}\n")
        (tmp_path / f"p{i}.txt").write_text("".join(lines))
        predictions.append(str(tmp_path / f"p{i}.txt"))
    args = copy.copy(official.args)
    args.predictionPath = str(tmp_path)
    args.gtInstancesFile = str(tmp_path / "gtInstances.json")
    args.exportFile = str(tmp_path / "result.json")
    args.quiet = True
    args.minRegionSizes = np.array([ours["ap_min_region_px"]] * 3)
    result = official.evaluateImgLists(predictions, [str(ground_truth)] * len(cases), args)
    assert ours["instance_ap"] == pytest.approx(100 * result["averages"]["allAp"])
    assert ours["instance_ap50"] == pytest.approx(100 * result["averages"]["allAp50%"])


def test_the_official_minimum_region_size_is_scaled_to_the_resolution(ground_truth):
    result = instance_ap([(ground_truth, prediction((CAR_A, 13, 0.9)))])
    assert result["ap_min_region_px"] == pytest.approx(100 * H * W / (1024 * 2048))
