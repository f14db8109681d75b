"""What the two-task study chooses and claims: the schedule from learning curves, the sweep on
fewer seeds, the memory format, and the paired statistics behind its verdicts."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments import two_task
from uncertainty_mtl.experiments.two_task.claims import combined, converged_epoch
from uncertainty_mtl.reporting.stats import delta_m, format_interval, paired_difference, verdict


def smoke(**changes):
    return replace(two_task.smoke_config(two_task.PRESETS["digits"]), **{"seeds": 2, **changes})


def test_paired_difference_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half-width 2.48414
    out = paired_difference([2, 4, 6], [1, 2, 3], higher_is_better=True)
    assert out["differences"] == [1, 2, 3] and out["mean"] == 2
    assert out["ci95"] == pytest.approx([2 - 2.484138, 2 + 2.484138], abs=1e-5)
    assert out["p_improve"] == 1.0 and out["verdict"] == "not separated"
    # differences 5, 6, 7 (sd 1): the interval [3.52, 8.48] excludes 0
    tight = paired_difference([5, 6, 8], [0, 0, 1], higher_is_better=True)
    assert tight["verdict"] == "better"
    assert paired_difference([5, 6, 8], [0, 0, 1], higher_is_better=False)["verdict"] == "worse"
    assert paired_difference([0.1], [0.2], higher_is_better=False)["ci95"] is None
    assert paired_difference([1, 1], [2, 0], higher_is_better=True)["p_improve"] == 0.5
    with pytest.raises(ValueError, match="equal"):
        paired_difference([1, 2], [1], higher_is_better=True)


def test_delta_m_by_hand_and_every_study_uses_it():
    # accuracy 90 against 100 (higher is better): +10 %; an error of 2 against 1: +100 %
    values, refs = {"a": 90.0, "b": 2.0}, {"a": 100.0, "b": 1.0}
    assert delta_m(values, refs, {"a": True, "b": False}) == pytest.approx(55.0)
    assert delta_m(refs, refs, {"a": True, "b": False}) == 0.0
    from uncertainty_mtl.experiments import qm9
    from uncertainty_mtl.experiments.benchmark.methods_stats import delta_m as by_spec

    assert qm9.delta_m({"x": 3.0, "y": 1.0}, {"x": 2.0, "y": 2.0}) == pytest.approx(0.0)
    metrics = {"accuracy": 90.0, "reconstruction_l1": 0.2}
    single = {"classification": {"accuracy": 100.0}, "reconstruction": {"reconstruction_l1": 0.1}}
    assert by_spec(metrics, single, ("classification", "reconstruction")) == pytest.approx(55.0)


def test_an_interval_is_written_with_its_signs_and_one_seed_says_so():
    assert format_interval([-2.04, 0.46]) == "[-2.0, +0.5]"
    assert format_interval([0.01234, 0.5], digits=3) == "[+0.012, +0.500]"
    one = paired_difference([0.1], [0.2], higher_is_better=False)
    assert format_interval(one["ci95"]) == "(n = 1)"


def test_verdicts_need_an_interval_that_excludes_zero():
    assert verdict([-0.1, 0.3], higher_is_better=True) == "not separated"
    assert verdict([0.0, 0.3], higher_is_better=True) == "not separated"
    assert verdict([-0.3, -0.1], higher_is_better=False) == "better"
    assert verdict(None, higher_is_better=True) == "not separated"
    assert combined({"a": "better", "b": "not separated"}) == "better"
    assert combined({"a": "better", "b": "worse"}) == "mixed"
    assert combined({"a": "worse"}) == "worse"
    assert combined({"a": "not separated", "b": "not separated"}) == "not separated"


def test_convergence_is_the_epoch_after_which_s_stays_near_its_last_value():
    s = [0.0, -0.5, -0.95, -1.05, -0.98, -1.0]  # last -1.0: within 0.1 from step 20 on
    records = [{"step": 10 * i, "log_var/classification": v} for i, v in enumerate(s)]
    assert converged_epoch(records, "classification", steps_per_epoch=20) == 20 / 20  # step 20
    records[4]["log_var/classification"] = -1.2  # leaves the band at step 40
    assert converged_epoch(records, "classification", steps_per_epoch=20) == 2.5  # step 50


def _history(per_epoch, values):
    rows = [{"step": 0, "val/accuracy": 10.0, "val/reconstruction_l1": 1.0}]
    for epoch, (acc, l1) in enumerate(values, start=1):
        rows.append({"step": epoch * per_epoch, "val/accuracy": acc, "val/reconstruction_l1": l1})
        rows.append(
            {"step": epoch * per_epoch + 1, "val/accuracy": 0.0, "val/reconstruction_l1": 9}
        )
    return rows


def test_schedule_is_the_cheapest_candidate_within_tolerance_of_the_best():
    # 100 training images: batch 32 -> 4 steps an epoch, batch 64 -> 2.
    curves = {
        32: _history(4, [(80, 0.30), (90, 0.20), (91, 0.10), (91, 0.10)]),
        64: _history(2, [(70, 0.40), (85, 0.25), (92, 0.10), (92, 0.10)]),
    }
    choice = two_task.choose_schedule(curves, train_images=100)
    # errors (100 - acc, l1) min-max normalised over the 8 candidates: the best is batch 64 at
    # epoch 3 (score 0); batch 32 at epoch 3 scores (9-8)/(30-8)/2 = 0.0227, outside 0.02
    assert choice["best"] == {
        "batch_size": 64,
        "epochs": 3,
        "score": 0.0,
        "val": {"accuracy": 92, "reconstruction_l1": 0.10},
    }
    assert (choice["batch_size"], choice["epochs"]) == (64, 3)
    loose = two_task.choose_schedule(curves, train_images=100, tolerance=0.05)
    assert (loose["batch_size"], loose["epochs"]) == (32, 3)  # same epochs: the smaller batch
    assert loose["score"] == pytest.approx(1 / 22 / 2)


def test_learning_curves_choose_on_val_and_draw_them(tmp_path):
    config = two_task.smoke_config(two_task.PRESETS["digits"])
    summary = two_task.learning_curves(
        config, tmp_path, batches=(16, 32), horizon=2, progress=False
    )
    saved = json.loads((tmp_path / "curves.json").read_text())
    assert saved["chosen"] == summary["chosen"]
    assert saved["chosen"]["batch_size"] in (16, 32) and 1 <= saved["chosen"]["epochs"] <= 2
    assert [p["epoch"] for p in saved["curves"]["16"]] == [0, 1, 2]  # 64 images: 4 steps an epoch
    assert all("test/accuracy" not in p for c in saved["curves"].values() for p in c)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_sweep_on_fewer_seeds_trains_the_chosen_point_for_every_seed(tmp_path):
    config = smoke(grid=(0.0, 0.25, 0.75, 1.0), grid_seeds=1)
    result = two_task.run_study(config, tmp_path, progress=False)
    chosen = result["approx_optimal"]["weights"]["classification"]
    trained = {
        p.parent.name.rsplit("-", 1)[0] + "/" + p.name for p in tmp_path.glob("runs/*/seed*")
    }
    for w in (0.25, 0.75):
        seeds = {0, 1} if w == chosen else {0}
        assert {s for s in (0, 1) if f"fixed-{w:.2f}/seed{s}" in trained} == seeds
    for w in (0.0, 0.5, 1.0):  # the rows: every seed
        assert {f"fixed-{w:.2f}/seed0", f"fixed-{w:.2f}/seed1"} <= trained
    assert result["rows"]["approx_optimal"]["test"]["accuracy"]["n"] == 2
    grid = {g["weights"]["classification"]: g["seeds"] for g in result["grid"]}
    assert grid == {0.0: 1, 0.25: 1, 0.5: 1, 0.75: 1, 1.0: 1}  # compared on the same seed
    point = {g["weights"]["classification"]: g for g in result["grid"]}[0.5]
    row = result["rows"]["unweighted"]["val"]["accuracy"]["values"]
    assert point["val"]["accuracy"]["values"] == row[:1] and len(row) == 2
    assert "first 1 seed(s)" in result["approx_optimal"]["criterion"]
    with pytest.raises(ConfigError, match="grid_seeds"):
        smoke(grid_seeds=3)


def test_claims_compare_the_rows_per_seed(tmp_path):
    result = two_task.run_study(smoke(), tmp_path, progress=False)
    claims = result["claims"]
    rows = result["rows"]
    (learned,) = [c for c in claims["learned_beats_tuned"] if c["row"] == "learned_paper"]
    acc = learned["tasks"]["classification"]
    expected = [
        a - b
        for a, b in zip(
            rows["learned_paper"]["test"]["accuracy"]["values"],
            rows["approx_optimal"]["test"]["accuracy"]["values"],
            strict=True,
        )
    ]
    assert acc["differences"] == pytest.approx(expected)
    single = {c["row"]: c for c in claims["mtl_beats_single_task"]}
    assert set(single) == {"unweighted", "approx_optimal", "learned_likelihood", "learned_paper"}
    l1 = single["unweighted"]["tasks"]["reconstruction"]
    assert l1["mean"] == pytest.approx(
        rows["unweighted"]["test"]["reconstruction_l1"]["mean"]
        - rows["reconstruction_only"]["test"]["reconstruction_l1"]["mean"]
    )
    settle = claims["uncertainties_converge_in_first_epoch"]["rows"]["learned_likelihood"]
    assert len(settle["classification"]["epochs"]) == 2
    assert all(0 <= e <= smoke().epochs for e in settle["reconstruction"]["epochs"])
    assert "paired over seeds" in (tmp_path / "two_task.md").read_text()


def test_channels_last_trains_the_same_model_up_to_rounding(tmp_path):
    config = smoke(seeds=1)
    plain = two_task.TwoTaskStudy(config).resolve(two_task.fixed_run(0.5))
    nhwc = replace(plain, channels_last=True)
    a = two_task.train_run(plain, tmp_path / "a")
    b = two_task.train_run(nhwc, tmp_path / "b")
    for split in ("val", "test"):
        assert b["final"][split]["reconstruction_l1"] == pytest.approx(
            a["final"][split]["reconstruction_l1"], rel=1e-3
        )
    study = two_task.TwoTaskStudy(config)
    assert "channels_last" not in study.identity(plain)  # older runs keep their identity
    assert study.identity(nhwc)["channels_last"] is True
    assert not math.isnan(b["final"]["test"]["accuracy"])


def test_the_fashion_mnist_presets_are_what_their_learning_curves_chose():
    """The presets' batch and epochs were chosen on val by the committed curves (the full rule
    and the short preset's, at most 10 epochs); the rule applied again to those curves gives
    the same choice."""
    docs = Path(__file__).parents[1] / "docs" / "two-task-fashion-mnist" / "curves.json"
    saved = json.loads(docs.read_text())
    curves = {
        int(batch): [
            {
                "step": p["epoch"] * math.ceil(saved["train_images"] / int(batch)),
                "val/accuracy": p["val/accuracy"],
                "val/reconstruction_l1": p["val/reconstruction_l1"],
            }
            for p in points
        ]
        for batch, points in saved["curves"].items()
    }
    full = two_task.choose_schedule(curves, saved["train_images"])
    short = two_task.choose_schedule(curves, saved["train_images"], max_epochs=10)
    assert {k: full[k] for k in ("batch_size", "epochs")} == {
        k: saved["chosen"][k] for k in ("batch_size", "epochs")
    }
    for preset, choice in (("fashion-mnist", full), ("fashion-mnist-short", short)):
        config = two_task.PRESETS[preset]
        assert (config.batch_size, config.epochs) == (choice["batch_size"], choice["epochs"])
        assert config.lr == 1e-4 and config.channels_last
    assert two_task.PRESETS["fashion-mnist-short"].grid_seeds == 1
    assert two_task.PRESETS["fashion-mnist"].grid_seeds is None  # the report's protocol
