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
