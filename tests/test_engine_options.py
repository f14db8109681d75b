"""The execution options of a run (mixed precision, channels_last, torch.compile, loader
workers) and the deferred finiteness check that a GPU uses, all exercised on the CPU."""

from __future__ import annotations

import json
import os

import pytest
import torch

import uncertainty_mtl.engine.builders as builders
import uncertainty_mtl.engine.loop as loop
import uncertainty_mtl.engine.scene as scene
from uncertainty_mtl.config import load_config
from uncertainty_mtl.engine import TrainingError, train


def smoke(city, *overrides):
    base = [f"data.root={city}", "data.synthetic=false", "eval.cluster_method=null"]
    return load_config("smoke", [*base, *overrides])


def losses(run_dir):
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss/total"] for r in records if "loss/total" in r]


def test_amp_picks_bfloat16_where_supported_and_float16_with_a_scaler_elsewhere(city, monkeypatch):
    config = smoke(city, "optim.amp=true")
    assert builders.amp_dtype(torch.device("cpu")) == torch.bfloat16
    assert not builders.grad_scaler(config, torch.device("cpu")).is_enabled()
    # The scaler a CUDA run would get (recorded, as no GPU is here): on only for float16.
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: (device, enabled))
    cuda = torch.device("cuda")
    plain = smoke(city)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert builders.amp_dtype(cuda) == torch.bfloat16
    assert builders.grad_scaler(config, cuda) == ("cuda", False)  # bfloat16 needs no scaling
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert builders.amp_dtype(cuda) == torch.float16
    assert builders.grad_scaler(config, cuda) == ("cuda", True)  # float16: scaled
    assert builders.grad_scaler(plain, cuda) == ("cuda", False)  # no AMP, no scaling


def test_channels_last_trains_the_same_model(city, tmp_path):
    plain = train(smoke(city, "optim.steps=4"), tmp_path / "plain", progress=False)
    nhwc = train(
        smoke(city, "optim.steps=4", "run.channels_last=true"), tmp_path / "nhwc", progress=False
    )
    assert losses(tmp_path / "nhwc") == pytest.approx(losses(tmp_path / "plain"), rel=1e-4)
    assert nhwc["metrics"]["miou"] == pytest.approx(plain["metrics"]["miou"], abs=0.5)
    # The option took effect: the weights were trained (and saved) in NHWC.
    layout = {}
    for name in ("plain", "nhwc"):
        state = torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)
        convs = [v for v in state["model"].values() if v.dim() == 4 and v.shape[-1] > 1]
        layout[name] = {v.is_contiguous(memory_format=torch.channels_last) for v in convs}
    assert layout == {"plain": {False}, "nhwc": {True}}


def test_compiled_network_trains_the_same_model(city, tmp_path, monkeypatch):
    # Dynamo's graph capture and AOT autograd as on a GPU; only inductor's C++ code
    # generation (minutes on 2 cores) is left out.
    compiled = []

    def aot_eager(module):
        compiled.append(module)
        return torch.compile(module, backend="aot_eager")

    monkeypatch.setattr(scene, "compile_module", aot_eager)
    train(smoke(city, "optim.steps=3"), tmp_path / "eager", progress=False)
    train(smoke(city, "optim.steps=3", "run.compile=true"), tmp_path / "compiled", progress=False)
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4)
    state = torch.load(tmp_path / "compiled" / "checkpoints" / "last.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in state["model"])  # plain keys, loadable anywhere
    assert len(compiled) == 1


def test_loader_workers_persist_and_do_not_change_a_single_number(city, tmp_path, monkeypatch):
    made = []
    real = scene.DataLoader

    def spy(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(scene, "DataLoader", spy)
    train(smoke(city, "optim.steps=6", "data.workers=2"), tmp_path / "w2", progress=False)
    assert len(made) == 1 and made[0]["persistent_workers"]  # one loader for the whole run
    monkeypatch.setattr(scene, "DataLoader", real)
    train(smoke(city, "optim.steps=6", "data.workers=0"), tmp_path / "w0", progress=False)
    a = (tmp_path / "w2" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "w0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss/total"] for x in a if "loss/total" in x] == [
        json.loads(x)["loss/total"] for x in b if "loss/total" in x
    ]


def test_resume_is_exact_with_dropout(city, tmp_path, interrupted):
    config = smoke(city, "optim.steps=8", "run.checkpoint_every=3", "model.aspp_dropout=0.5")
    interrupted(config, after=5)
    before = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    result = train(config, tmp_path / "split", resume=True, progress=False)
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    # the training time counts both sessions (the first up to its checkpoint at step 3)
    training = result["training"]
    assert before["step"] == 3 and before["seconds"] > 0
    assert training["seconds"] == pytest.approx(
        before["seconds"] + training["seconds_this_session"]
    )


def test_deferred_finiteness_check_stops_before_any_save(
    city, tmp_path, monkeypatch, poison_depth_loss
):
    """On a GPU the flag is read on logging steps only: a NaN at step 3 is found at step 4,
    before step 4's checkpoint, and the last checkpoint stays step 2's."""
    monkeypatch.setattr(loop, "finite_check_every", lambda device, log_every: log_every)
    poison_depth_loss(3)
    config = smoke(city, "run.log_every=4", "run.checkpoint_every=2", "eval.select_split=null")
    with pytest.raises(TrainingError, match=r"a step in 3\.\.4: non-finite total loss") as info:
        train(config, tmp_path / "run", progress=False)
    assert "(step 2)" in str(info.value)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_deterministic_mode_is_on_during_the_run_only_and_changes_nothing_on_the_cpu(
    city, tmp_path, monkeypatch
):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []

    def on_step(step):
        seen.append(torch.are_deterministic_algorithms_enabled())

    train(smoke(city, "run.deterministic=true"), tmp_path / "det", progress=False, on_step=on_step)
    assert seen and all(seen)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    train(smoke(city), tmp_path / "plain", progress=False)
    assert losses(tmp_path / "det") == losses(tmp_path / "plain")
