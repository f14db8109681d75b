"""The methods recent comparisons include, each against a hand computation: the sum of
log-losses (si), analytical uncertainty weighting (uw-so), FAMO, DB-MTL's gradient balancing,
and the uncertainty weighting started at its closed-form optimum (init_log_var="auto")."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uncertainty_mtl.config import ConfigError, load_config
from uncertainty_mtl.weighting import UncertaintyWeighting
from uncertainty_mtl.weighting.registry import option_values
from uncertainty_mtl.weighting.scale_invariant import (
    FAMO,
    AnalyticalUncertaintyWeighting,
    ScaleInvariantWeighting,
)
from uncertainty_mtl.weighting.uncertainty import optimal_log_variance


def leaves(*values: float) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(v, requires_grad=True) for t, v in zip("abc", values, strict=False)}


def test_si_is_the_sum_of_log_losses_and_weighs_each_by_its_inverse():
    losses = leaves(2.0, 0.5)
    weighting = ScaleInvariantWeighting(["a", "b"])
    total = weighting(losses)
    assert float(total.detach()) == pytest.approx(math.log(2.0) + math.log(0.5))
    total.backward()
    assert float(losses["a"].grad) == pytest.approx(0.5)
    assert float(losses["b"].grad) == pytest.approx(2.0)
    assert weighting.effective_weights() == pytest.approx({"a": 0.5, "b": 2.0})
    # a loss of 0 adds nothing and gets no gradient (no NaN)
    zero = leaves(0.0, 4.0)
    weighting(zero).backward()
    assert float(zero["a"].grad) == 0.0 and float(zero["b"].grad) == pytest.approx(0.25)


def test_uw_so_weights_are_t_times_a_softmax_of_inverse_losses():
    losses = leaves(1.0, 2.0)
    weighting = AnalyticalUncertaintyWeighting(["a", "b"], temperature=1.0)
    total = weighting(losses)
    ea, eb = math.exp(1.0), math.exp(0.5)
    wa, wb = 2 * ea / (ea + eb), 2 * eb / (ea + eb)
    assert weighting.effective_weights() == pytest.approx({"a": wa, "b": wb})
    assert float(total.detach()) == pytest.approx(wa * 1.0 + wb * 2.0)
    total.backward()  # the weights are constants: the gradient of L_t is w_t
    assert float(losses["a"].grad) == pytest.approx(wa)
    # a high temperature flattens towards equal weights; a zero loss gets weight 0
    hot = AnalyticalUncertaintyWeighting(["a", "b"], temperature=1e6)
    hot(leaves(1.0, 2.0))
    assert list(hot.effective_weights().values()) == pytest.approx([1.0, 1.0], rel=1e-5)
    weighting(leaves(0.0, 3.0))
    assert weighting.effective_weights() == pytest.approx({"a": 0.0, "b": 2.0})
    with pytest.raises(ValueError, match="temperature"):
        AnalyticalUncertaintyWeighting(["a"], temperature=0.0)


def test_famo_total_weights_and_logit_steps_by_hand():
    famo = FAMO(["a", "b"], weight_lr=0.025, gamma=0.0)
    first = leaves(1.0, 2.0)
    total = famo(first)
    # z = (1/2, 1/2), c = 0.5/1 + 0.5/2 = 0.75: total = (0.5·log 1 + 0.5·log 2) / 0.75
    assert float(total.detach()) == pytest.approx(0.5 * math.log(2.0) / 0.75)
    total.backward()
    assert float(first["a"].grad) == pytest.approx(0.5 / 0.75)  # z_a / (c·L_a)
    assert famo.effective_weights() == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert famo.logits.tolist() == [0.0, 0.0]  # nothing to compare with yet

    # the next call: δ = log L(before) − log L(after), the logits' gradient J_softmaxᵀ·δ (by
    # autograd, as the authors compute it), and one Adam step of torch's own optimiser
    famo(leaves(0.9, 1.9))
    delta = torch.tensor([math.log(1.0 / 0.9), math.log(2.0 / 1.9)])
    xi = nn.Parameter(torch.zeros(2))
    (grad,) = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)
    reference = torch.optim.Adam([xi], lr=0.025, weight_decay=0.0)
    xi.grad = grad
    reference.step()
    torch.testing.assert_close(famo.logits, xi.detach())
    assert famo.logits[0] < famo.logits[1]  # the task that fell faster gets less weight

    # state round trip, and no update in eval mode or without gradients
    copy = FAMO(["a", "b"])
    copy.load_state_dict(famo.state_dict())
    torch.testing.assert_close(copy.logits, famo.logits)
    before = famo.logits.clone()
    famo.eval()
    famo(leaves(0.5, 0.5))
    torch.testing.assert_close(famo.logits, before)


def test_db_mtl_balances_the_averaged_log_loss_gradients_by_hand():
    pytest.importorskip("torchjd")
    from uncertainty_mtl.weighting.aggregators import GradientAggregation

    theta = nn.Parameter(torch.tensor([1.0, 2.0]))
    head = nn.Parameter(torch.tensor(3.0))
    weighting = GradientAggregation(
        ["a", "b"], "db-mtl", options=option_values("db-mtl")
    )  # β = 0.9, σ = 0

    def step(scale_a: float, scale_b: float) -> None:
        theta.grad, head.grad = None, None
        features = theta * 1.0
        losses = {  # ∇_θ log L_a = (2θ_0, 0)/L_a ... written out below
            "a": scale_a * (features[0] ** 2 + head**2),
            "b": scale_b * features[1] ** 2,
        }
        weighting.backward_from_features(losses, features, [theta])

    step(1.0, 1.0)
    # log L_a = log(θ0² + h²): ∇θ = (2θ0/(θ0²+h²), 0) = (0.2, 0); log L_b = log θ1²: (0, 2/θ1)
    g = torch.tensor([[0.2, 0.0], [0.0, 1.0]])
    b = 0.1 * g  # the average starts at 0: b = g + 0.9·(0 − g)
    norms = b.norm(dim=1)
    expected = (norms.max() / (norms + 1e-8)) @ b
    torch.testing.assert_close(theta.grad, expected)
    # the head gets the gradient of its own task's log-loss: 2h/(θ0²+h²) = 0.6
    assert float(head.grad) == pytest.approx(0.6)
    assert weighting.effective_weights() == pytest.approx({"a": 5.0, "b": 1.0}, rel=1e-6)
    # a loss's unit changes nothing (log): the same point with L_a × 100 gives the same update
    step(100.0, 1.0)
    b = g + 0.9 * (b - g)
    norms = b.norm(dim=1)
    torch.testing.assert_close(theta.grad, (norms.max() / (norms + 1e-8)) @ b)


@pytest.mark.parametrize(
    ("likelihood", "convention"),
    [
        ("gaussian", "likelihood"),
        ("laplace", "likelihood"),
        ("softmax", "likelihood"),
        ("laplace", "paper"),
    ],
)
def test_auto_init_starts_each_s_at_the_optimum_of_its_first_loss(likelihood, convention):
    weighting = UncertaintyWeighting({"t": likelihood}, init_log_var="auto", convention=convention)
    total = weighting({"t": torch.tensor(250.0)})
    term = "gaussian" if convention == "paper" and likelihood != "softmax" else likelihood
    s = weighting.log_variances()["t"]
    assert s == pytest.approx(optimal_log_variance(term, 250.0), rel=1e-6)
    # at the optimum the term's derivative in s is 0
    s_param = weighting.log_vars
    (grad,) = torch.autograd.grad(total, s_param)
    assert abs(float(grad)) < 1e-4
    # later calls leave s to the optimiser; the state says nothing is pending
    weighting({"t": torch.tensor(1.0)})
    assert weighting.log_variances()["t"] == pytest.approx(s)
    fresh = UncertaintyWeighting({"t": likelihood}, init_log_var="auto", convention=convention)
    fresh.load_state_dict(weighting.state_dict())
    fresh({"t": torch.tensor(1.0)})
    assert fresh.log_variances()["t"] == pytest.approx(s)


def test_auto_init_waits_for_a_positive_loss_and_for_training():
    weighting = UncertaintyWeighting(
        {"a": "laplace", "b": "softmax"}, init_log_var="auto", missing="skip"
    )
    weighting.eval()
    weighting({"a": torch.tensor(3.0), "b": torch.tensor(1.0)})
    assert weighting.log_variances() == {"a": 0.0, "b": 0.0}  # evaluation sets nothing
    weighting.train()
    weighting({"a": torch.tensor(0.0), "b": torch.tensor(2.0)})  # a: no positive loss yet
    assert weighting.log_variances()["a"] == 0.0
    assert weighting.log_variances()["b"] == pytest.approx(math.log(4.0))
    weighting({"a": torch.tensor(3.0)})  # b left out: a is set now, b kept
    assert weighting.log_variances()["a"] == pytest.approx(2 * math.log(3.0))
    assert weighting.log_variances()["b"] == pytest.approx(math.log(4.0))
    # an old state (before "auto") loads, with nothing pending
    old = {k: v for k, v in weighting.state_dict().items() if k != "_auto_pending"}
    loaded = UncertaintyWeighting({"a": "laplace", "b": "softmax"}, init_log_var="auto")
    loaded.load_state_dict(old)
    loaded({"a": torch.tensor(9.0), "b": torch.tensor(9.0)})
    assert loaded.log_variances() == pytest.approx(weighting.log_variances())


def test_auto_init_needs_the_log_regulariser_and_is_a_config_value():
    with pytest.raises(ValueError, match="regulariser='log'"):
        UncertaintyWeighting({"t": "gaussian"}, init_log_var="auto", regulariser="positive")
    with pytest.raises(ValueError, match="'auto'"):
        UncertaintyWeighting({"t": "gaussian"}, init_log_var="fast")
    assert load_config("smoke", ["weighting.init_log_var=auto"]).weighting.init_log_var == "auto"
    with pytest.raises(ConfigError, match="init_log_var"):
        load_config("smoke", ["weighting.init_log_var=fast"])
    with pytest.raises(ConfigError, match="regulariser"):
        load_config("smoke", ["weighting.init_log_var=auto", "weighting.regulariser=positive"])


def _ranks(rank: int, out: str) -> None:
    import torch.distributed as dist

    from uncertainty_mtl.engine import shutdown_distributed

    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"file://{out}/rv")
    try:
        losses = {"a": torch.tensor(2.0 + 4 * rank), "b": torch.tensor(1.0 + rank)}
        uncertainty = UncertaintyWeighting({"a": "gaussian", "b": "laplace"}, init_log_var="auto")
        uncertainty(losses)
        famo, uw_so = FAMO(["a", "b"]), AnalyticalUncertaintyWeighting(["a", "b"])
        for step in range(3):
            famo({t: v / (step + 1) ** (1 + rank) for t, v in losses.items()})
        uw_so(losses)
        torch.save(
            {
                "s": uncertainty.log_variances(),
                "famo": famo.logits.tolist(),
                "uw-so": uw_so.effective_weights(),
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        shutdown_distributed()


def test_every_rank_starts_and_weighs_alike_from_different_losses(tmp_path):
    """Under DDP the ranks see different losses; the auto start, FAMO's logits and UW-SO's
    weights come from their mean over the ranks, so both ranks hold the same values."""
    import torch.multiprocessing as mp

    mp.spawn(_ranks, args=(str(tmp_path),), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert first == second
    # the mean losses: a = (2 + 6)/2 = 4, b = (1 + 2)/2 = 1.5
    assert first["s"]["a"] == pytest.approx(math.log(4.0), rel=1e-6)
    assert first["s"]["b"] == pytest.approx(2 * math.log(1.5), rel=1e-6)
    ea, eb = math.exp(1 / 4), math.exp(1 / 1.5)
    assert first["uw-so"] == pytest.approx({"a": 2 * ea / (ea + eb), "b": 2 * eb / (ea + eb)})
