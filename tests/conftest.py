"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def city(tmp_path_factory):
    """The smoke tests' synthetic city (32×64, 16/8/8 frames); tests copy it before changing it."""
    from uncertainty_mtl.data.synthetic import SynthConfig, generate_city

    root = tmp_path_factory.mktemp("smoke-city")
    sizes = {"train": 16, "val": 8, "test": 8}
    generate_city(root, SynthConfig(height=32, width=64, seed=0, split_sizes=sizes), progress=False)
    return root


@pytest.fixture
def interrupted(tmp_path):
    """``interrupted(config, after)`` trains ``config`` whole into ``tmp_path/whole`` and into
    ``tmp_path/split`` until a Ctrl-C after step ``after``; returns the whole run's result and
    both directories (the test resumes ``split`` itself)."""
    from uncertainty_mtl.engine import train

    def run(config, after):
        whole = train(config, tmp_path / "whole", progress=False)

        def crash(step):
            if step == after:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "split", progress=False, on_step=crash)
        return whole, tmp_path / "whole", tmp_path / "split"

    return run


@pytest.fixture
def poison_depth_loss(monkeypatch):
    """``poison_depth_loss(n)``: the n-th scene-loss call of the training loop returns a NaN
    depth loss (the others are the real losses)."""
    import uncertainty_mtl.engine.builders as builders

    real = builders.scene_losses

    def poison(at_call: int) -> None:
        calls = {"n": 0}

        def poisoned(outputs, targets, tasks):
            losses = real(outputs, targets, tasks)
            calls["n"] += 1
            if calls["n"] == at_call:
                losses["depth"] = losses["depth"] * float("nan")
            return losses

        monkeypatch.setattr(builders, "scene_losses", poisoned)

    return poison


@pytest.fixture
def killed_and_resumed(tmp_path):
    """``check(study, run, job, kill_at)``: trains ``run`` (a two-task or QM9 run's
    settings) uninterrupted, then in a process that SIGKILLs itself after step ``kill_at``,
    then as a study's job would (it finds the checkpoint and resumes), and asserts that the two
    end the same: every record of metrics.jsonl, the last checkpoint tensor by tensor, the
    result less its timings. Returns the resumed run's result."""
    import dataclasses
    import json
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import torch

    driver = Path(__file__).parent / "faults" / "study_run.py"

    def assert_identical(a, b, where):
        """Equal bit for bit: tensors, and the dicts, lists and plain values around them."""
        assert type(a) is type(b), where
        if isinstance(a, torch.Tensor):
            assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b), where
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                assert_identical(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list | tuple):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                assert_identical(x, y, f"{where}[{i}]")
        else:
            assert a == b, where

    def check(study, run, job, kill_at):
        whole, split = tmp_path / "whole", tmp_path / "split"
        reference = job(run, whole)
        spec = {
            "study": study,
            "settings": dataclasses.asdict(run),
            "out": str(split),
            "cwd": str(Path.cwd()),
            "kill_at_step": kill_at,
        }
        proc = subprocess.run(
            [sys.executable, str(driver), json.dumps(spec)], capture_output=True, text=True
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        killed = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
        assert 0 < killed["step"] < kill_at and not (split / "results.json").exists()
        resumed = job(run, split)
        a, b = (
            torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (whole, split)
        )
        for part in ("model", "weighting", "optimizer", "step", "study"):
            assert_identical(a[part], b[part], part)
        # torch's generator is the one these runs draw from (NumPy's and Python's are the
        # test process's own, unseeded)
        assert_identical(a["rng"]["torch"], b["rng"]["torch"], "rng.torch")
        lines = [(d / "metrics.jsonl").read_text().splitlines() for d in (whole, split)]
        assert lines[0] == lines[1] and len(lines[0]) >= 2
        for key in ("metrics", "final", "history", "log_variances", "effective_weights"):
            assert resumed[key] == reference[key], key
        return resumed

    return check
