"""Training and evaluation: the run directory, exact resume, errors, overfitting one batch."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
import torch
import yaml
from torch import nn

from uncertainty_mtl.cli import main
from uncertainty_mtl.config import ConfigError, load_config
from uncertainty_mtl.engine import TrainingError, evaluate_run, train
from uncertainty_mtl.errors import RunDirectoryError
from uncertainty_mtl.models import MultiTaskNet
from uncertainty_mtl.tasks.registry import scene_losses
from uncertainty_mtl.weighting import FixedWeighting


def smoke(city, *overrides):
    return load_config("smoke", [f"data.root={city}", *overrides])


def test_a_run_writes_the_documented_directory(city, tmp_path):
    out = tmp_path / "run"
    results = train(smoke(city), out, progress=False)
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.pt").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["steps"] == 6 and saved["data"]["root"] == str(city)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "split" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    for task in ("semantic", "instance", "depth"):
        assert {f"loss/{task}", f"log_var/{task}", f"weight/{task}"} <= set(steps[0])
    assert steps[0]["lr"] == pytest.approx(0.01) and steps[-1]["lr"] < steps[0]["lr"]
    validations = [r for r in records if r.get("split") == "val"]
    assert [r["step"] for r in validations] == [3, 6]
    assert validations[0]["criterion"] == 1.0
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["split"] == "test" and on_disk["metrics"] == results["metrics"]
    assert {
        "miou",
        "iou_per_class",
        "instance_mean_error_px",
        "depth_mean_error_px",
        "depth_rms_error_px",
    } <= set(results["metrics"])
    assert results["frames"] == 8 and results["resolution"] == [32, 64]
    # TensorBoard: the curves (not the epoch, not pixel counts), a prediction panel at each
    # validation, and the reported split's numbers at the end
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/semantic", "val/miou", "test/miou", "test/depth_mean_error_px"} <= set(
        tags["scalars"]
    )
    assert not [t for t in tags["scalars"] if t == "epoch" or t.endswith("_pixels")]
    panels = events.Images("val/prediction")
    assert [p.step for p in panels] == [3, 6]
    # input, then prediction and ground truth for each of the three tasks, at 32×64
    assert (panels[0].height, panels[0].width) == (32, 64 * 7)
    assert [e.value for e in events.Scalars("test/miou")] == [
        pytest.approx(results["metrics"]["miou"])
    ]
    # where the run's seconds went: the loop's phases but validation are parts of its training
    # time (validations are not training), the clustering and the official AP parts of the
    # final evaluation's
    phases = results["training"]["phase_seconds"]
    loop = ("data_wait", "steps", "logging", "validation", "checkpoints")
    assert set(phases) == {"data", "setup", *loop, "final_evaluation", "clustering", "instance_ap"}
    assert all(v >= 0 for v in phases.values())
    training = results["training"]
    assert sum(phases[k] for k in loop if k != "validation") <= training["seconds_this_session"]
    assert training["seconds_this_session"] < sum(phases[k] for k in loop)
    assert phases["clustering"] + phases["instance_ap"] <= phases["final_evaluation"]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "weighting", "optimizer", "scheduler", "step", "rng", "config"} <= set(state)
    assert state["step"] == 6
    # weight decay is not on the log-variances
    groups = state["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["model", "weighting"]
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 1e-4


def test_resume_gives_the_weights_and_metrics_of_an_uninterrupted_run(city, tmp_path, interrupted):
    config = smoke(city, "optim.steps=8", "run.checkpoint_every=3", "eval.every=4")
    whole, _, _ = interrupted(config, after=5)  # killed after step 5; last checkpoint: step 3
    assert (
        torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    )
    resumed = train(config, tmp_path / "split", resume=True, progress=False)
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    torch.testing.assert_close(
        a["weighting"]["log_vars"], b["weighting"]["log_vars"], rtol=0, atol=0
    )
    assert resumed["metrics"] == whole["metrics"]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [
        json.loads(x)["step"]
        for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    ]


def test_a_run_is_never_overwritten_and_resume_checks_the_config(city, tmp_path):
    out = tmp_path / "run"
    train(smoke(city), out, progress=False)
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        train(smoke(city), out, progress=False)
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.01 -> 0\.5"):
        train(smoke(city, "optim.lr=0.5"), out, resume=True, progress=False)
    with pytest.raises(RunDirectoryError, match="not a run directory"):
        train(smoke(city), tmp_path / "empty", resume=True, progress=False)


def test_a_non_finite_loss_names_the_task_and_step_and_keeps_the_last_checkpoint(
    city, tmp_path, poison_depth_loss
):
    poison_depth_loss(3)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(smoke(city, "run.checkpoint_every=1", "eval.select_split=null"), out, progress=False)
    message = str(info.value)
    assert "step 3" in message and "'depth'" in message and "(step 2)" in message
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_evaluate_writes_results_for_the_report_split_and_other_splits(city, tmp_path, capsys):
    out = tmp_path / "run"
    trained = train(smoke(city), out, progress=False)
    again = evaluate_run(out)
    assert again["metrics"] == trained["metrics"] and again["checkpoint"] == "best"
    assert main(["evaluate", str(out), "--split", "val", "--checkpoint", "last"]) == 0
    val = json.loads((out / "results-val.json").read_text())
    assert val["split"] == "val" and val["checkpoint"] == "last" and val["step"] == 6
    assert "val split, " in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


def test_train_cli_generates_the_synthetic_city_on_first_use_and_quiet_prints_no_bar(
    tmp_path, capsys
):
    root = tmp_path / "city"
    code = main(
        [
            "train",
            "--config",
            "smoke",
            "--set",
            f"data.root={root}",
            "--set",
            "data.synthetic=true",
            "--set",
            "data.synth_split_sizes={train: 8, val: 4, test: 4}",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    assert code == 0
    assert (root / "synth.json").is_file()
    assert (tmp_path / "cache" / "train" / "index.json").is_file()  # the caches were built
    captured = capsys.readouterr()
    assert "test split, " in captured.out
    assert captured.err == ""  # --quiet: neither the city's nor the caches' progress bars
    shutil.rmtree(tmp_path / "cache")  # evaluating rebuilds the split's cache, quietly too
    assert main(["evaluate", str(tmp_path / "run"), "--split", "val", "--quiet"]) == 0
    assert (tmp_path / "cache" / "val" / "index.json").is_file()
    captured = capsys.readouterr()
    assert "val split, " in captured.out
    assert captured.err == ""


def test_a_tiny_model_overfits_one_batch_on_all_three_tasks(city):
    """On one fixed batch, in 150 steps: semantic and depth losses fall at least 5-fold, the
    instance loss at least 3-fold. (At 32×64 the decoders upsample a 4×8 feature map, and the
    labels and disparities carry the city's noise, so one batch cannot be fitted exactly: the
    losses level off near 0.4, 1.2 px and 0.125 px.)"""
    from uncertainty_mtl.data.cityscapes import CityscapesScenes

    torch.manual_seed(0)
    data = CityscapesScenes(city, "train")
    batch = [data[i] for i in range(4)]
    images = torch.stack([b[0] for b in batch])
    targets = {k: torch.stack([b[1][k] for b in batch]) for k in batch[0][1]}
    net = MultiTaskNet(
        ["semantic", "instance", "depth"],
        backbone="small",
        small_width=16,
        aspp_rates=[1, 2, 3],
        aspp_channels=32,
        decoder_channels=32,
    )
    weighting = FixedWeighting({"semantic": 1.0, "instance": 1.0, "depth": 1.0})
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        losses = scene_losses(net(images), targets, net.tasks)
        first = first or {t: float(v.detach()) for t, v in losses.items()}
        optimiser.zero_grad()
        weighting(losses).backward()
        optimiser.step()
    last = {t: float(v.detach()) for t, v in scene_losses(net(images), targets, net.tasks).items()}
    factors = {"semantic": 5, "instance": 3, "depth": 5}
    for task, factor in factors.items():
        assert last[task] < first[task] / factor, (task, first[task], last[task])


def test_amp_run_on_cpu_uses_bfloat16_and_keeps_log_variances_in_float32(city, tmp_path):
    from uncertainty_mtl.engine.builders import autocast as _autocast

    config = smoke(city, "optim.amp=true")
    with _autocast(config, torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        net = MultiTaskNet(
            ["depth"], backbone="small", small_width=8, aspp_channels=8, decoder_channels=8
        )
        assert net(torch.randn(2, 3, 32, 32))["depth"].dtype == torch.bfloat16
    results = train(config, tmp_path / "run", progress=False)
    assert all(
        v == v for k, v in results["metrics"].items() if isinstance(v, float)
    )  # no NaN anywhere
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["weighting"]["log_vars"].dtype == torch.float32
    assert all(
        abs(v) > 0
        for k, v in results["training"]["weighting_at_kept_checkpoint"].items()
        if k.startswith("log_var/")
    )


def test_depth_scale_and_tempered_softmax_train_and_report_pixels(city, tmp_path):
    import uncertainty_mtl.engine.builders as engine

    seen = {}
    real = engine.scene_losses

    def spy(outputs, targets, tasks):
        seen.setdefault("depth_max", float(targets["inverse_depth"].max()))
        return real(outputs, targets, tasks)

    engine.scene_losses = spy
    try:
        config = smoke(
            city, "data.depth_scale=100", "weighting.likelihoods={semantic: tempered_softmax}"
        )
        results = train(config, tmp_path / "run", progress=False)
    finally:
        engine.scene_losses = real
    assert seen["depth_max"] > 100  # the loss saw labels in units of 1/100 px
    weights = results["training"]["weighting_at_kept_checkpoint"]
    assert weights["weight/semantic"] == pytest.approx(1.0)  # tempered: no weight, no penalty
    assert weights["log_var/semantic"] != 0.0  # but s learned through the loss
    with pytest.raises(ConfigError, match=r"weighting\.likelihoods: depth: 'softmax'"):
        smoke(city, "weighting.likelihoods={depth: softmax}")


class _ConstantDepth(nn.Module):
    """A "network" predicting one inverse depth everywhere, in the units it was trained in."""

    tasks = ("depth",)

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, images):
        b, _, h, w = images.shape
        return {"depth": torch.full((b, 1, h, w), self.value)}


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_evaluation_reports_depth_in_pixels_whatever_depth_scale(scale):
    from uncertainty_mtl.engine.evaluate import evaluate

    target = torch.tensor([[[1.0, 2.0], [3.0, 10.0]]])
    valid = torch.tensor([[[True, True], [True, False]]])
    batch = (torch.zeros(1, 3, 2, 2), {"inverse_depth": target, "depth_mask": valid}, [""])
    # 2 px predicted; in the network's units that is 2·scale
    metrics = evaluate(
        _ConstantDepth(2.0 * scale), [batch], device=torch.device("cpu"), depth_scale=scale
    )
    assert metrics["depth_mean_error_px"] == pytest.approx((1 + 0 + 1) / 3)
    assert metrics["depth_rms_error_px"] == pytest.approx(((1 + 0 + 1) / 3) ** 0.5)


@pytest.mark.parametrize("every", [6, 3])
def test_a_selection_run_reports_its_last_validation_without_measuring_it_twice(
    city, tmp_path, every, monkeypatch
):
    # select and report on val, no clustering: with one validation (every=6) the kept
    # checkpoint's metrics are that validation's; with two (every=3) the kept one may be the
    # first, measured again. Either way they are what evaluating the kept checkpoint gives.
    evaluation = importlib.import_module("uncertainty_mtl.engine.evaluate")
    scene = importlib.import_module("uncertainty_mtl.engine.scene")

    passes = []

    def counted(*args, **kwargs):
        passes.append(1)
        return real(*args, **kwargs)

    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", counted)  # the final evaluation's
    monkeypatch.setattr(scene, "evaluate", counted)  # the validations'
    out = tmp_path / "run"
    config = smoke(
        city,
        "eval.report_split=val",
        "eval.select_split=val",
        "eval.cluster_method=null",
        f"eval.every={every}",
    )
    trained = train(config, out, progress=False)
    monkeypatch.undo()
    assert trained["split"] == "val" and trained["frames"] == 8
    assert trained["metrics"] == evaluate_run(out, progress=False)["metrics"]
    validations = [
        json.loads(line)
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if '"split"' in line
    ]
    assert [v["step"] for v in validations] == list(range(every, 7, every))
    kept = next(v for v in validations if v["step"] == trained["step"])
    assert kept["val/miou"] == trained["metrics"]["miou"]
    # one pass over val per validation, and one more only when the kept checkpoint is not
    # the last one validated
    again = 0 if trained["step"] == 6 else 1
    assert len(passes) == len(validations) + again
