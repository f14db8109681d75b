"""Scene metrics against hand computations and the official cityscapesscripts evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from uncertainty_mtl.data.labels import id_to_train_id
from uncertainty_mtl.metrics import SceneMetrics, miou_from_confusion


def one_hot_logits(prediction):
    return torch.nn.functional.one_hot(prediction, 19).permute(0, 3, 1, 2).float()


def test_miou_by_hand_with_ignore_and_absent_classes():
    labels = torch.tensor([[[0, 0, 1, 255], [1, 2, 2, 2]]])
    predicted = torch.tensor([[[0, 1, 1, 7], [1, 2, 2, 0]]])
    metrics = SceneMetrics(["semantic"])
    metrics.update({"semantic": one_hot_logits(predicted)}, {"semantic": labels})
    out = metrics.compute()
    # class 0: tp 1, fp 1 (pixel labelled 2), fn 1 -> 1/3; class 1: tp 2, fp 1, fn 0 -> 2/3;
    # class 2: tp 2, fp 0, fn 1 -> 2/3; class 7 predicted only on an ignored pixel: absent.
    assert out["iou_per_class"]["road"] == pytest.approx(100 / 3)
    assert out["iou_per_class"]["sidewalk"] == pytest.approx(200 / 3)
    assert out["iou_per_class"]["building"] == pytest.approx(200 / 3)
    assert out["iou_per_class"]["traffic sign"] is None
    assert out["miou"] == pytest.approx((100 / 3 + 200 / 3 + 200 / 3) / 3)
    assert out["pixel_accuracy"] == pytest.approx(100 * 5 / 7)
    assert out["semantic_pixels"] == 7


def test_split_level_accumulation_is_not_a_mean_over_images():
    metrics = SceneMetrics(["instance", "depth"])
    mask_a = torch.tensor([[[True, False]]])
    mask_b = torch.tensor([[[True, True]]])
    for mask, error in ((mask_a, 4.0), (mask_b, 1.0)):
        offset = torch.zeros(1, 2, 1, 2)
        metrics.update(
            {"instance": offset + error / 2, "depth": torch.full((1, 1, 1, 2), error)},
            {
                "instance_offset": offset,
                "instance_mask": mask,
                "inverse_depth": torch.zeros(1, 1, 2),
                "depth_mask": mask,
            },
        )
    out = metrics.compute()
    # Pixels: one with error 4, two with error 1 -> (4 + 1 + 1) / 3, not (4 + 1) / 2.
    assert out["instance_mean_error_px"] == pytest.approx(2.0)
    assert out["depth_mean_error_px"] == pytest.approx(2.0)
    assert out["depth_rms_error_px"] == pytest.approx(math.sqrt((16 + 1 + 1) / 3))


def test_miou_equals_the_official_pixel_level_evaluation(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    rng = np.random.default_rng(0)
    train_to_id = {int(t): i for i, t in enumerate(id_to_train_id()) if t < 19 and i < 34}
    label_ids = np.array(sorted({i for i in range(34)}))
    ours = SceneMetrics(["semantic"])
    gts, preds = [], []
    for k in range(3):
        gt = rng.choice(label_ids, size=(24, 40)).astype(np.uint8)  # includes ignored ids
        # Predictions: mostly right, some random, all among the 19 evaluated classes.
        gt_train = id_to_train_id()[gt]
        pred_train = np.where(rng.random(gt.shape) < 0.6, gt_train, rng.integers(0, 19, gt.shape))
        pred_train = np.where(pred_train == 255, rng.integers(0, 19, gt.shape), pred_train)
        if k == 0:
            pred_train[pred_train == 6] = 5  # a class never predicted in one image
        pred = np.vectorize(train_to_id.get)(pred_train).astype(np.uint8)
        gt_path, pred_path = tmp_path / f"c_{k}_gtFine_labelIds.png", tmp_path / f"c_{k}_pred.png"
        Image.fromarray(gt).save(gt_path)
        Image.fromarray(pred).save(pred_path)
        gts.append(str(gt_path))
        preds.append(str(pred_path))
        ours.update(
            {"semantic": one_hot_logits(torch.from_numpy(pred_train).long()[None])},
            {"semantic": torch.from_numpy(gt_train.astype(np.int64))[None]},
        )
    args = official.args
    args.evalInstLevelScore = False
    args.quiet = True
    args.JSONOutput = False
    result = official.evaluateImgLists(preds, gts, args)
    expected = 100 * result["averageScoreClasses"]
    out = ours.compute()
    assert out["miou"] == pytest.approx(expected, abs=1e-9)
    for name, value in result["classScores"].items():
        if math.isnan(value):
            assert out["iou_per_class"].get(name) is None
        else:
            assert out["iou_per_class"][name] == pytest.approx(100 * value, abs=1e-9)


def test_miou_of_an_empty_confusion_is_nan():
    miou, per_class = miou_from_confusion(torch.zeros(19, 19, dtype=torch.int64))
    assert math.isnan(miou) and per_class == [None] * 19
