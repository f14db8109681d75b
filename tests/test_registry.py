"""The one list of weighting methods: every consumer reads it, an unknown name is an error
everywhere, and what it says of each method is true of the method's class."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from uncertainty_mtl.cli import main
from uncertainty_mtl.config import WEIGHTING_KINDS, ConfigError, WeightingConfig, load_config
from uncertainty_mtl.engine.builders import weighting_from
from uncertainty_mtl.experiments.benchmark import methods as methods_study
from uncertainty_mtl.weighting import Weighting
from uncertainty_mtl.weighting.registry import (
    AGGREGATOR,
    METHODS,
    BuildArgs,
    UnknownMethodError,
    build_method,
    markdown_table,
)

TASKS = ["semantic", "instance", "depth"]
METHODS_PAGE = Path(__file__).parents[1] / "docs" / "methods.md"
HAS_TORCHJD = importlib.util.find_spec("torchjd") is not None


def test_the_config_the_benchmark_and_the_docs_read_the_registry():
    assert tuple(METHODS) == WEIGHTING_KINDS
    benchmarked = [m for m in methods_study.METHODS if m != "approx-optimal"]
    assert sorted(benchmarked) == sorted(n for n, m in METHODS.items() if m.benchmarked)
    assert methods_study.LOSS_WEIGHTINGS[0] == "equal"
    assert markdown_table() in METHODS_PAGE.read_text(encoding="utf-8")


def test_an_unknown_method_is_an_error_everywhere(tmp_path, capsys):
    with pytest.raises(UnknownMethodError, match=r"'softmax-weights'.*'uncertainty'"):
        build_method("softmax-weights", BuildArgs(TASKS))
    # the builder used to fall back to the uncertainty weighting for a kind it did not know
    with pytest.raises(ConfigError, match=r"weighting\.kind: 'softmax-weights'"):
        weighting_from(WeightingConfig(kind="softmax-weights"), TASKS, seed=0, lr=0.1)
    with pytest.raises(ConfigError, match=r"weighting\.kind"):
        load_config("smoke", ["weighting.kind=softmax-weights"])
    out = tmp_path / "run"
    assert main(["train", "--config", "smoke", "--set", "weighting.kind=x", "--out", str(out)]) == 2
    assert "weighting.kind" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("name", [n for n in METHODS if n != "fixed"])
def test_each_method_is_what_the_registry_says(name):
    spec = METHODS[name]
    if spec.package and importlib.util.find_spec(spec.package) is None:
        pytest.skip(f"needs {spec.package}")
    config = WeightingConfig(kind=name)
    weighting = weighting_from(config, TASKS, seed=0, lr=0.1)
    assert isinstance(weighting, Weighting)
    # the hooks the docs name are the ones the training step acts on
    assert ("features" in spec.hooks) == weighting.needs_features, name
    assert ("task_gradients" in spec.hooks) == weighting.needs_task_gradients, name
    overrides_on_epoch = type(weighting).on_epoch is not Weighting.on_epoch
    assert ("on_epoch" in spec.hooks) == overrides_on_epoch, name
    assert (spec.family == AGGREGATOR) == (spec.extra == "methods"), name
    # its own keys have their section in the config (whose defaults are the registry's)
    if spec.options:
        section = getattr(config, spec.section, None)
        assert dataclasses.is_dataclass(section), name
        fields = {f.name for f in dataclasses.fields(section)}
        assert {o.key for o in spec.options} == fields, name
    assert all(k in {f.name for f in dataclasses.fields(WeightingConfig)} for k in spec.keys)


def test_a_method_s_own_key_reaches_its_weighting_and_is_range_checked(city):
    dwa = weighting_from(
        load_config("smoke", ["weighting.kind=dwa", "weighting.dwa.temperature=0.5"]).weighting,
        TASKS,
        seed=0,
        lr=0.1,
    )
    assert dwa.temperature == 0.5
    with pytest.raises(ConfigError, match=r"weighting\.dwa\.temperature must be .* > 0"):
        load_config("smoke", ["weighting.kind=dwa", "weighting.dwa.temperature=0"])
    with pytest.raises(ConfigError, match=r"weighting\.gradnorm is for kind 'gradnorm' only"):
        load_config("smoke", ["weighting.kind=dwa", "weighting.gradnorm.alpha=1"])


def test_without_torchjd_an_aggregator_names_the_extra(city, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchjd" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError) as info:
        build_method("mgda", BuildArgs(TASKS))
    assert info.value.name == "torchjd"
    out = tmp_path / "run"
    args = ["train", "--config", "smoke", "--out", str(out), "--quiet"]
    for item in (f"data.root={city}", "data.synthetic=false", "weighting.kind=mgda"):
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs the 'methods' extra" in err and "torchjd" in err
    assert not out.exists()
