"""The torchjd gradient aggregators (SPEC §8) on a tiny two-task problem: the wiring (the shared
parameter's update is the aggregator applied to the per-task gradients written out by hand, the
heads get their own task's gradient), the property that defines each method, and a Pareto-
stationary end point; then a scene training run of each."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from uncertainty_mtl.config import ConfigError, load_config
from uncertainty_mtl.engine import train
from uncertainty_mtl.weighting.aggregators import GradientAggregation
from uncertainty_mtl.weighting.registry import AGGREGATOR, METHODS, option_values

#: Every aggregator; DB-MTL's rows are the gradients of log L (its own test below).
AGGREGATORS = [m.name for m in METHODS.values() if m.family == AGGREGATOR]
OF_LOSSES = [k for k in AGGREGATORS if k != "db-mtl"]

pytest.importorskip("torchjd")

A, B = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])


def losses_at(theta: torch.Tensor, heads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """L_a = |θ − A|² + h_a², L_b = ½|θ − B|² + (h_b − 1)²: the features are θ itself, so
    ∇_θ L_a = 2(θ − A) and ∇_θ L_b = θ − B."""
    return {
        "a": ((theta - A) ** 2).sum() + heads["a"] ** 2,
        "b": 0.5 * ((theta - B) ** 2).sum() + (heads["b"] - 1) ** 2,
    }


def one_update(kind: str, point=(0.6, 0.3)):
    theta = nn.Parameter(torch.tensor(point))
    heads = {"a": nn.Parameter(torch.tensor(0.5)), "b": nn.Parameter(torch.tensor(3.0))}
    weighting = GradientAggregation(["a", "b"], kind, options=option_values(kind))
    features = theta * 1.0
    weighting.backward_from_features(losses_at(features, heads), features, [theta])
    ga, gb = 2 * (theta.detach() - A), theta.detach() - B  # by hand
    return weighting, theta.grad, heads, ga, gb


@pytest.mark.parametrize("kind", OF_LOSSES)
def test_the_shared_update_is_the_aggregator_of_the_hand_written_jacobian(kind):
    from uncertainty_mtl.weighting.aggregators import _makers

    weighting, d, heads, ga, gb = one_update(kind)
    assert ga @ gb < 0  # the two tasks conflict here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cvxpy's remarks (CAGrad, Nash-MTL)
        expected = _makers(2, option_values(kind))[kind]()(torch.stack([ga, gb]))
    torch.testing.assert_close(d, expected, rtol=1e-5, atol=1e-6)
    # the heads get their own task's gradient, unaggregated
    assert float(heads["a"].grad) == pytest.approx(2 * 0.5)
    assert float(heads["b"].grad) == pytest.approx(2 * (3.0 - 1))
    assert set(weighting.effective_weights()) == {"a", "b"}


def test_each_update_has_the_property_that_defines_its_method():
    # MGDA: the min-norm point of the segment between the two gradients
    _, d, _, ga, gb = one_update("mgda")
    gamma = min(1.0, max(0.0, float(-(gb @ (ga - gb)) / ((ga - gb) @ (ga - gb)))))
    torch.testing.assert_close(d, gamma * ga + (1 - gamma) * gb, rtol=1e-3, atol=1e-4)
    # PCGrad: each gradient projected onto the normal plane of the other, summed
    _, d, _, ga, gb = one_update("pcgrad")
    pa, pb = ga - (ga @ gb) / (gb @ gb) * gb, gb - (gb @ ga) / (ga @ ga) * ga
    torch.testing.assert_close(d, pa + pb, rtol=1e-5, atol=1e-6)
    # IMTL-G: equal projections onto every task's unit gradient
    _, d, _, ga, gb = one_update("imtl-g")
    assert float(d @ ga / ga.norm()) == pytest.approx(float(d @ gb / gb.norm()), rel=1e-4)
    # UPGrad: conflicts with no task
    _, d, _, ga, gb = one_update("upgrad")
    assert float(d @ ga) >= -1e-6 and float(d @ gb) >= -1e-6 and float(d.norm()) > 0
    # CAGrad: within c·|g0| of the mean gradient g0, and better than g0 for the worse task
    _, d, _, ga, gb = one_update("cagrad")
    g0 = (ga + gb) / 2
    assert float((d - g0).norm()) <= 0.4 * float(g0.norm()) * (1 + 1e-4)
    assert min(float(d @ ga), float(d @ gb)) > min(float(g0 @ ga), float(g0 @ gb))
    # Nash-MTL: the bargaining solution, α_i·(Gα)_i the same for every task
    weighting, _, _, ga, gb = one_update("nash-mtl")
    alpha = torch.tensor(list(weighting.effective_weights().values()))
    gram = torch.stack([ga, gb]) @ torch.stack([ga, gb]).T
    products = alpha * (gram @ alpha)
    assert float(products[0]) == pytest.approx(float(products[1]), rel=1e-3)


def min_norm(ga: torch.Tensor, gb: torch.Tensor) -> float:
    """The norm of the min-norm convex combination: 0 exactly at a Pareto-stationary point."""
    diff = ga - gb
    gamma = min(1.0, max(0.0, float(-(gb @ diff) / (diff @ diff)))) if diff.norm() > 0 else 0.5
    return float((gamma * ga + (1 - gamma) * gb).norm())


@pytest.mark.parametrize("kind", list(AGGREGATORS))
def test_each_aggregator_reaches_a_pareto_stationary_point(kind):
    """From (3, −1), steps of decaying length along each method's direction: the end point lies
    on the Pareto set (the segment from A to B), where no direction lowers both losses. The
    steps are normalised because the methods' updates differ in scale near the set (Aligned-
    MTL's shrinks with the smaller singular value, IMTL-G's does not shrink: with plain SGD one
    step size is too large for one and too small for the other)."""
    theta = nn.Parameter(torch.tensor([3.0, -1.0]))
    heads = {t: nn.Parameter(torch.tensor(0.0)) for t in ("a", "b")}
    weighting = GradientAggregation(["a", "b"], kind, options=option_values(kind))
    start = min_norm(2 * (theta.detach() - A), theta.detach() - B)
    for k in range(150):
        theta.grad = None
        features = theta * 1.0
        weighting.backward_from_features(losses_at(features, heads), features, [theta])
        with torch.no_grad():
            norm = theta.grad.norm()
            if norm > 0:
                theta -= 0.2 * 0.97**k * theta.grad / norm
    t = theta.detach()
    assert min_norm(2 * (t - A), t - B) < 0.01 * start, t.tolist()


def scene(city, *overrides):
    base = [f"data.root={city}", "data.synthetic=false", "eval.cluster_method=null"]
    return load_config("smoke", [*base, *overrides])


def test_cagrad_stops_the_shared_update_when_one_task_gradient_vanishes():
    """What the docs report of CAGrad on digits: at A = θ (task a fitted, its gradient 0),
    torchjd's CAGrad returns a zero shared update ("approximately on the Pareto front"), where
    the mean gradient, ½(θ − B), is not 0; the heads still get their own gradients. A canary:
    if torchjd changes this, the docs' sentence must change with it."""
    _, grad, heads, ga, gb = one_update("cagrad", point=(1.0, 0.0))
    assert torch.equal(ga, torch.zeros(2)) and gb.norm() > 1
    assert torch.equal(grad, torch.zeros(2))
    assert heads["b"].grad == pytest.approx(2 * (3.0 - 1))
    mean = one_update("upgrad", point=(1.0, 0.0))[1]  # another aggregator moves θ there
    assert mean.norm() > 0


@pytest.mark.parametrize("kind", ["upgrad", "mgda"])
def test_a_scene_run_with_an_aggregator_trains_logs_and_resumes_exactly(
    kind, city, tmp_path, interrupted
):
    config = scene(city, f"weighting.kind={kind}", "optim.steps=8", "run.checkpoint_every=3")
    interrupted(config, after=5)
    train(config, tmp_path / "split", resume=True, progress=False)
    whole = (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert (tmp_path / "split" / "metrics.jsonl").read_text() == whole
    records = [json.loads(line) for line in whole.splitlines() if '"lr"' in line]
    for record in records:
        losses = [record[f"loss/{t}"] for t in ("semantic", "instance", "depth")]
        assert record["loss/total"] == pytest.approx(sum(losses), rel=1e-5)  # the plain sum
        assert all(math.isfinite(record[f"weight/{t}"]) for t in ("semantic", "depth"))
    assert records[-1]["weight/semantic"] != 1.0  # the aggregator's weights, not the default


def test_aggregators_refuse_several_processes_compile_and_amp(city, tmp_path, capsys):
    from types import SimpleNamespace

    from uncertainty_mtl.cli import main
    from uncertainty_mtl.engine.step import check_aggregation

    config = scene(city, "weighting.kind=pcgrad")
    check_aggregation(config, SimpleNamespace(world=1, device=torch.device("cpu")))
    with pytest.raises(ConfigError, match="one process"):
        check_aggregation(config, SimpleNamespace(world=2, device=torch.device("cpu")))
    with pytest.raises(ConfigError, match=r"run\.compile false"):
        scene(city, "weighting.kind=pcgrad", "run.compile=true")
    # AMP used to fail at the first step with a traceback and a half-made run directory.
    for kind in ("pcgrad", "upgrad", "mgda"):
        out = tmp_path / kind
        args = ["train", "--config", "smoke", "--out", str(out), "--quiet"]
        for item in (f"data.root={city}", "data.synthetic=false", f"weighting.kind={kind}"):
            args += ["--set", item]
        assert main([*args, "--set", "optim.amp=true"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("umtl: error: ") and "optim.amp false" in err and "\n" not in err
        assert not out.exists()
    assert scene(city, "weighting.kind=cagrad", "weighting.cagrad.c=0.2").weighting.cagrad.c == 0.2
    with pytest.raises(ConfigError, match=r"weighting\.cagrad is for kind 'cagrad' only"):
        scene(city, "weighting.kind=pcgrad", "weighting.cagrad.c=0.2")


def test_every_weighting_kind_of_the_config_builds_its_own_weighting(city):
    """``config.WEIGHTING_KINDS`` and the builders agree: a kind the builder did not know would
    otherwise train with the uncertainty weighting, its fallback."""
    from uncertainty_mtl.config import WEIGHTING_KINDS
    from uncertainty_mtl.engine.builders import build_weighting
    from uncertainty_mtl.weighting import (
        FAMO,
        AnalyticalUncertaintyWeighting,
        DynamicWeightAverage,
        FixedWeighting,
        GeometricWeighting,
        GradNorm,
        IMTLLossWeighting,
        RandomWeighting,
        ScaleInvariantWeighting,
        UncertaintyWeighting,
    )

    expected = {
        "uncertainty": UncertaintyWeighting,
        "fixed": FixedWeighting,
        "equal": FixedWeighting,
        "gls": GeometricWeighting,
        "rlw": RandomWeighting,
        "imtl-l": IMTLLossWeighting,
        "dwa": DynamicWeightAverage,
        "gradnorm": GradNorm,
        "si": ScaleInvariantWeighting,
        "uw-so": AnalyticalUncertaintyWeighting,
        "famo": FAMO,
        **dict.fromkeys(AGGREGATORS, GradientAggregation),
    }
    assert set(expected) == set(WEIGHTING_KINDS)
    weights = "weighting.weights={semantic: 1, instance: 1, depth: 1}"
    for kind in WEIGHTING_KINDS:
        extra = [weights] if kind == "fixed" else []
        weighting = build_weighting(scene(city, f"weighting.kind={kind}", *extra))
        assert type(weighting) is expected[kind], kind
        assert getattr(weighting, "kind", kind) == kind
