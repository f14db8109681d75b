"""The uncertainty weighting against closed forms written out here, independently of the code."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uncertainty_mtl import FixedWeighting, UncertaintyWeighting, parameter_groups
from uncertainty_mtl.weighting.uncertainty import optimal_log_variance

LIKELIHOODS = ("gaussian", "laplace", "softmax")


def term_by_hand(
    likelihood: str, s: torch.Tensor, loss: torch.Tensor, regulariser: str, d: int = 1
):
    """SPEC §1, one row per likelihood; ``d`` scalars summed per element."""
    penalty = 0.5 * d * s if regulariser == "log" else torch.log1p(torch.exp(s))
    if likelihood == "gaussian":
        return 0.5 * torch.exp(-s) * loss + penalty
    if likelihood == "laplace":
        return torch.exp(-0.5 * s) * loss + penalty
    return torch.exp(-s) * loss + penalty


def minimiser_by_hand(likelihood: str, loss: float, regulariser: str, d: int = 1) -> float:
    if regulariser == "log":
        return {
            "gaussian": math.log(loss / d),
            "laplace": 2 * math.log(loss / d),
            "softmax": math.log(2 * loss),
        }[likelihood]
    # d/ds of the term = 0 with x = exp(s), penalty' = x / (1 + x):
    if likelihood == "gaussian":  # 0.5 L / x = x / (1 + x)  ->  x² - 0.5 L x - 0.5 L = 0
        return math.log((0.5 * loss + math.sqrt(0.25 * loss**2 + 2 * loss)) / 2)
    if likelihood == "softmax":  # L / x = x / (1 + x)  ->  x² - L x - L = 0
        return math.log((loss + math.sqrt(loss**2 + 4 * loss)) / 2)
    # laplace, y = sqrt(x): 0.5 L / y = y² / (1 + y²)  ->  y³ - 0.5 L y² - 0.5 L = 0
    roots = np.roots([1.0, -0.5 * loss, 0.0, -0.5 * loss])
    y = max(r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0)
    return 2 * math.log(y)


def effective_likelihood(likelihood: str, convention: str, regulariser: str = "log") -> str:
    """The paper convention: the Gaussian term for regression; Liebel & Körner: for every task."""
    if regulariser == "positive":
        return "gaussian"
    return "gaussian" if convention == "paper" and likelihood != "softmax" else likelihood


def minimise_s(weighting: UncertaintyWeighting, losses: dict[str, torch.Tensor]) -> dict:
    optimiser = torch.optim.LBFGS(
        weighting.parameters(),
        lr=1.0,
        max_iter=200,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        total = weighting(losses)
        total.backward()
        return total

    for _ in range(5):
        optimiser.step(closure)
    return weighting.log_variances()


@pytest.mark.parametrize("regulariser", ["log", "positive"])
@pytest.mark.parametrize("convention", ["likelihood", "paper"])
def test_optimising_s_alone_reaches_the_closed_form_minimiser(convention, regulariser):
    losses = {"g": 0.37, "l": 4.2, "c": 1.3}
    likelihoods = {"g": "gaussian", "l": "laplace", "c": "softmax"}
    weighting = UncertaintyWeighting(
        likelihoods, convention=convention, regulariser=regulariser, init_log_var=1.5
    ).double()
    found = minimise_s(
        weighting, {t: torch.tensor(v, dtype=torch.float64) for t, v in losses.items()}
    )
    for task, loss in losses.items():
        expected = minimiser_by_hand(
            effective_likelihood(likelihoods[task], convention, regulariser), loss, regulariser
        )
        assert found[task] == pytest.approx(expected, abs=1e-3), task


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_optimal_log_variance_helper_matches_the_closed_form(likelihood):
    for loss in (0.01, 0.5, 3.0):
        assert optimal_log_variance(likelihood, loss) == pytest.approx(
            minimiser_by_hand(likelihood, loss, "log"), rel=1e-12
        )
    for d in (2, 3):
        if likelihood == "softmax":
            with pytest.raises(ValueError, match="must be 1"):
                optimal_log_variance(likelihood, 0.5, d)
        else:
            assert optimal_log_variance(likelihood, 0.5, d) == pytest.approx(
                minimiser_by_hand(likelihood, 0.5, "log", d), rel=1e-12
            )


def test_event_dims_move_the_minimiser_to_log_of_l_over_d():
    """SPEC §1: a loss summing d scalars per element has the penalty (d/2)·s, so the minimiser
    is log(L/d) (gaussian) and 2·log(L/d) (laplace), and the weight there d/(2L) and d/L."""
    losses = {"g": 0.37, "l": 4.2, "c": 1.3}
    likelihoods = {"g": "gaussian", "l": "laplace", "c": "softmax"}
    dims = {"g": 3, "l": 2}
    weighting = UncertaintyWeighting(likelihoods, event_dims=dims, init_log_var=1.5).double()
    found = minimise_s(
        weighting, {t: torch.tensor(v, dtype=torch.float64) for t, v in losses.items()}
    )
    assert found["g"] == pytest.approx(math.log(0.37 / 3), abs=1e-4)
    assert found["l"] == pytest.approx(2 * math.log(4.2 / 2), abs=1e-4)
    assert found["c"] == pytest.approx(math.log(2 * 1.3), abs=1e-4)
    weights = weighting.effective_weights()
    assert weights["g"] == pytest.approx(3 / (2 * 0.37), rel=1e-3)
    assert weights["l"] == pytest.approx(2 / 4.2, rel=1e-3)
    # the paper's formula as printed ignores d (0.5·s, Gaussian form) ...
    paper = UncertaintyWeighting(likelihoods, event_dims=dims, convention="paper").double()
    found = minimise_s(paper, {t: torch.tensor(v, dtype=torch.float64) for t, v in losses.items()})
    assert found["l"] == pytest.approx(math.log(4.2), abs=1e-4)
    # ... and so does Liebel & Körner's
    positive = UncertaintyWeighting(likelihoods, event_dims=dims, regulariser="positive").double()
    found = minimise_s(
        positive, {t: torch.tensor(v, dtype=torch.float64) for t, v in losses.items()}
    )
    assert found["l"] == pytest.approx(minimiser_by_hand("gaussian", 4.2, "positive"), abs=1e-4)


def test_event_dims_enter_the_total_as_d_halves_of_s():
    weighting = UncertaintyWeighting(
        {"i": "laplace", "c": "softmax"}, event_dims={"i": 2}, init_log_var={"i": 0.7, "c": -0.2}
    ).double()
    losses = {
        "i": torch.tensor(1.9, dtype=torch.float64),
        "c": torch.tensor(0.4, dtype=torch.float64),
    }
    s_i, s_c = weighting.log_vars.detach()  # 0.7 and -0.2 rounded to float32 at creation
    expected = term_by_hand("laplace", s_i, losses["i"], "log", d=2) + term_by_hand(
        "softmax", s_c, losses["c"], "log"
    )
    torch.testing.assert_close(weighting(losses), expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(weighting(losses), weighting.log_vars)
    # d/ds_i [exp(-s/2)·L + s] = -0.5·exp(-s/2)·L + 1
    assert grad[0].item() == pytest.approx(-0.5 * math.exp(-s_i.item() / 2) * 1.9 + 1.0, rel=1e-12)


@pytest.mark.parametrize(
    ("dims", "match"),
    [
        ({"c": 2}, "must be 1"),
        ({"x": 2}, "unknown task"),
        ({"i": 0}, "integer >= 1"),
        ({"i": 1.5}, "integer >= 1"),
        ({"i": True}, "integer >= 1"),
    ],
)
def test_bad_event_dims_are_refused_naming_the_task(dims, match):
    with pytest.raises(ValueError, match=match):
        UncertaintyWeighting({"i": "laplace", "c": "softmax"}, event_dims=dims)


def test_the_positive_regulariser_is_liebel_and_koerner_for_every_likelihood():
    """0.5·exp(-s)·L + log(1 + exp(s)) for an L1 task and a cross-entropy task too (SPEC §1)."""
    weighting = UncertaintyWeighting(
        {"l": "laplace", "c": "softmax"},
        regulariser="positive",
        event_dims={"l": 2},
        init_log_var={"l": 0.3, "c": -1.1},
    ).double()
    losses = {
        "l": torch.tensor(2.5, dtype=torch.float64),
        "c": torch.tensor(0.8, dtype=torch.float64),
    }
    s_l, s_c = weighting.log_vars.tolist()  # 0.3 and -1.1 rounded to float32
    expected = sum(
        0.5 * math.exp(-s) * float(losses[t]) + math.log1p(math.exp(s))
        for t, s in (("l", s_l), ("c", s_c))
    )
    assert weighting(losses).item() == pytest.approx(expected, rel=1e-12)
    assert weighting.effective_weights() == pytest.approx(
        {"l": 0.5 * math.exp(-s_l), "c": 0.5 * math.exp(-s_c)}, rel=1e-12
    )


@pytest.mark.parametrize("regulariser", ["log", "positive"])
@pytest.mark.parametrize("convention", ["likelihood", "paper"])
def test_total_and_gradients_match_hand_written_formula(convention, regulariser):
    likelihoods = {"a": "gaussian", "b": "laplace", "c": "softmax"}
    weighting = UncertaintyWeighting(
        likelihoods, convention=convention, regulariser=regulariser
    ).double()
    names = list(likelihoods)

    def module_total(*args):
        losses = dict(zip(names, args[:3], strict=True))
        params = {"log_vars": torch.stack(args[3:])}
        return torch.func.functional_call(weighting, params, (losses,))

    def hand_total(*args):
        return sum(
            term_by_hand(
                effective_likelihood(likelihoods[t], convention, regulariser), s, loss, regulariser
            )
            for t, loss, s in zip(names, args[:3], args[3:], strict=True)
        )

    generator = torch.Generator().manual_seed(0)
    inputs = tuple(
        (torch.rand((), generator=generator, dtype=torch.float64) * 3 + 0.1).requires_grad_()
        for _ in range(3)
    ) + tuple(
        (torch.randn((), generator=generator, dtype=torch.float64) * 2).requires_grad_()
        for _ in range(3)
    )
    assert torch.autograd.gradcheck(module_total, inputs)
    ours, theirs = module_total(*inputs), hand_total(*inputs)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    grads_ours = torch.autograd.grad(ours, inputs)
    grads_theirs = torch.autograd.grad(theirs, inputs)
    for g1, g2 in zip(grads_ours, grads_theirs, strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_effective_weights_variances_and_log_dict():
    w = UncertaintyWeighting(
        {"a": "gaussian", "b": "laplace", "c": "softmax"}, init_log_var={"a": 0.4, "b": -1.0}
    )
    s = {"a": 0.4, "b": -1.0, "c": 0.0}
    assert w.log_variances() == pytest.approx(s)
    assert w.variances() == pytest.approx({t: math.exp(v) for t, v in s.items()})
    expected = {"a": 0.5 * math.exp(-0.4), "b": math.exp(0.5), "c": 1.0}
    assert w.effective_weights() == pytest.approx(expected)
    paper = UncertaintyWeighting({"b": "laplace"}, convention="paper", init_log_var=-1.0)
    assert paper.effective_weights() == pytest.approx({"b": 0.5 * math.exp(1.0)})
    logged = w.log_dict()
    assert logged["log_var/b"] == pytest.approx(-1.0)
    assert logged["var/a"] == pytest.approx(math.exp(0.4))
    assert logged["weight/c"] == pytest.approx(1.0)


def test_total_is_negative_when_tasks_are_fitted_well():
    w = UncertaintyWeighting({"a": "gaussian"}, init_log_var=math.log(0.01))
    total = float(w({"a": torch.tensor(0.01)}).detach())
    assert total == pytest.approx(0.5 + 0.5 * math.log(0.01))
    assert total < 0
    positive = UncertaintyWeighting({"a": "gaussian"}, init_log_var=-20.0, regulariser="positive")
    assert float(positive({"a": torch.tensor(1e-12)}).detach()) > 0


class _ThreeHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 8)
        self.reg_a = nn.Linear(8, 1)
        self.reg_b = nn.Linear(8, 1)
        self.cls = nn.Linear(8, 3)

    def losses(self, x, ya, yb, yc, *, scale: float = 1.0):
        """Every loss multiplied by ``scale``: a change of the tasks' units."""
        h = torch.tanh(self.trunk(x))
        return {
            "a": F.mse_loss(self.reg_a(h).squeeze(1), ya) * scale,
            "b": F.l1_loss(self.reg_b(h).squeeze(1), yb) * scale,
            "c": F.cross_entropy(self.cls(h), yc) * scale,
        }


@pytest.mark.parametrize("convention", ["likelihood", "paper"])
def test_units_move_the_optimum_by_log_c_and_leave_the_network_gradient_unchanged(convention):
    torch.manual_seed(0)
    net = _ThreeHeads().double()
    x = torch.randn(32, 4, dtype=torch.float64)
    ya, yb = torch.randn(32, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    yc = torch.randint(0, 3, (32,))
    likelihoods = {"a": "gaussian", "b": "laplace", "c": "softmax"}
    c = 250.0
    shifts = {
        "a": math.log(c),
        "b": (2 if convention == "likelihood" else 1) * math.log(c),
        "c": math.log(c),
    }

    grads, optima = [], []
    for scale in (1.0, c):
        losses = net.losses(x, ya, yb, yc, scale=scale)
        weighting = UncertaintyWeighting(likelihoods, convention=convention).double()
        optimum = minimise_s(weighting, {t: v.detach() for t, v in losses.items()})
        optima.append(optimum)
        net.zero_grad()
        weighting(losses).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for task, shift in shifts.items():
        assert optima[1][task] - optima[0][task] == pytest.approx(shift, abs=1e-6)
    for g1, g2 in zip(*grads, strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-9)
    # Fixed weights, by contrast, hand the unit change on to the gradient.
    fixed = []
    for scale in (1.0, c):
        net.zero_grad()
        FixedWeighting({"a": 1.0, "b": 1.0, "c": 1.0})(
            net.losses(x, ya, yb, yc, scale=scale)
        ).backward()
        fixed.append(net.reg_b.weight.grad.clone())
    torch.testing.assert_close(fixed[1], c * fixed[0])


def test_fixed_weighting_is_the_weighted_sum_and_skips_zero_weight_tasks():
    w = FixedWeighting({"a": 0.89, "b": 0.01, "c": 0.0})
    assert w.tasks == ("a", "b")
    total = w({"a": torch.tensor(2.0), "b": torch.tensor(30.0)})
    assert float(total) == pytest.approx(0.89 * 2.0 + 0.01 * 30.0)
    ignored = w({"a": torch.tensor(2.0), "b": torch.tensor(30.0), "c": torch.tensor(float("nan"))})
    assert float(ignored) == pytest.approx(float(total))
    assert w.effective_weights() == {"a": 0.89, "b": 0.01}
    assert w.log_variances() == {}
    assert list(w.parameters()) == []


@pytest.mark.parametrize(
    ("losses", "message"),
    [
        ({"a": torch.tensor(1.0)}, "no loss given for task(s) ['b']"),
        (
            {"a": torch.tensor(1.0), "b": torch.tensor(1.0), "z": torch.tensor(1.0)},
            "unknown task(s) ['z']",
        ),
        ({"a": torch.ones(3), "b": torch.tensor(1.0)}, "loss of task 'a' must be a 0-dim tensor"),
        (
            {"a": torch.tensor(1.0), "b": torch.tensor(float("inf"))},
            "non-finite loss for task(s) ['b']",
        ),
        (
            {"a": torch.tensor(float("nan")), "b": torch.tensor(1.0)},
            "non-finite loss for task(s) ['a']",
        ),
        ({"a": 1.0, "b": torch.tensor(1.0)}, "loss of task 'a' must be a tensor"),
    ],
)
@pytest.mark.parametrize("kind", ["uncertainty", "fixed"])
def test_bad_calls_name_the_task(kind, losses, message):
    if kind == "uncertainty":
        w = UncertaintyWeighting({"a": "gaussian", "b": "softmax"})
    else:
        w = FixedWeighting({"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError) as info:
        w(losses)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"likelihoods": {"a": "l1"}}, "task 'a': unknown likelihood 'l1'"),
        ({"likelihoods": {}}, "likelihoods is empty"),
        ({"likelihoods": {"a.b": "gaussian"}}, "task name 'a.b' is not allowed"),
        ({"likelihoods": {"a": "gaussian"}, "convention": "kendall"}, "convention must be one of"),
        ({"likelihoods": {"a": "gaussian"}, "regulariser": "l2"}, "regulariser must be one of"),
        ({"likelihoods": {"a": "gaussian"}, "init_log_var": {"b": 1.0}}, "unknown task(s) ['b']"),
        ({"likelihoods": {"a": "gaussian"}, "init_log_var": float("nan")}, "must be finite"),
    ],
)
def test_bad_construction_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError) as info:
        UncertaintyWeighting(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": -1.0}, "weight of task 'a' must be a finite number >= 0"),
        ({"a": float("inf")}, "weight of task 'a'"),
        ({"a": 0.0, "b": 0.0}, "every weight is 0"),
    ],
)
def test_bad_fixed_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        FixedWeighting(weights)


def test_sigma_is_learned_through_log_variance_and_init_is_per_task():
    w = UncertaintyWeighting({"a": "gaussian", "b": "softmax"}, init_log_var={"b": -2.0})
    (name, param), *others = w.named_parameters()
    assert name == "log_vars" and not others
    assert param.dtype == torch.float32 and param.shape == (2,)
    assert w.log_variances() == {"a": 0.0, "b": -2.0}
    assert float(w.log_var("b").detach()) == -2.0


def test_parameter_groups_keep_weight_decay_off_the_log_variances():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    weighting = UncertaintyWeighting({"a": "gaussian"}, init_log_var=2.0)
    groups = parameter_groups(model, weighting, lr=0.1, weight_decay=0.5, weighting_lr=0.2)
    assert [g["name"] for g in groups] == ["model", "weighting"]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lr"] == 0.2
    assert groups[0]["weight_decay"] == 0.5 and groups[0]["lr"] == 0.1
    assert [id(p) for p in groups[1]["params"]] == [id(weighting.log_vars)]

    x, y = torch.randn(8, 3), torch.randn(8)

    def sgd_step(param_source):
        m, w = nn.Linear(3, 1), UncertaintyWeighting({"a": "gaussian"}, init_log_var=2.0)
        m.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(param_source(m, w), lr=0.1, weight_decay=0.5)
        total = w({"a": F.mse_loss(m(x).squeeze(1), y)})
        total.backward()
        grad = float(w.log_vars.grad[0])
        opt.step()
        return w.log_variances()["a"], grad

    ours, grad = sgd_step(lambda m, w: parameter_groups(m, w, lr=0.1, weight_decay=0.5))
    assert ours == pytest.approx(2.0 - 0.1 * grad, abs=1e-7)
    naive, _ = sgd_step(lambda m, w: [*m.parameters(), *w.parameters()])
    assert naive == pytest.approx(2.0 - 0.1 * (grad + 0.5 * 2.0), abs=1e-7)


def test_adam_moves_s_by_about_its_learning_rate_a_step_and_weighting_lr_frees_it():
    """Why learned weights "never move" under Adam: whatever the gradient, Adam's step on ``s``
    is about ``lr``, so ``s`` travels at most ``lr`` a step; its own larger rate gets it to the
    optimum ``log 2L`` of a cross-entropy of 0.01 (s* = -3.91)."""
    loss = torch.tensor(0.01)

    def travel(weighting_lr: float, steps: int = 200) -> float:
        w = UncertaintyWeighting({"a": "softmax"})
        groups = parameter_groups(
            nn.Linear(1, 1), w, lr=1e-3, weight_decay=0.0, weighting_lr=weighting_lr
        )
        opt = torch.optim.Adam(groups)
        for _ in range(steps):
            opt.zero_grad()
            w({"a": loss}).backward()
            opt.step()
        return w.log_variances()["a"]

    optimum = math.log(2 * 0.01)
    slow = travel(1e-3)
    assert -0.2 - 1e-4 <= slow < -0.19  # 200 steps of at most 1e-3: s is still near 0
    assert travel(0.1) == pytest.approx(optimum, abs=0.05)


def test_parameter_groups_when_the_weighting_is_a_submodule_and_for_fixed_weights():
    model = nn.ModuleDict(
        {"net": nn.Linear(2, 2), "weighting": UncertaintyWeighting({"a": "softmax"})}
    )
    groups = parameter_groups(model, model["weighting"], lr=1.0, weight_decay=1e-4)
    assert len(groups[0]["params"]) == 2  # weight and bias, not the log-variance
    assert len(groups[1]["params"]) == 1
    fixed = parameter_groups(nn.Linear(2, 2), FixedWeighting({"a": 1.0}), lr=1.0, weight_decay=0)
    assert [g["name"] for g in fixed] == ["model"]
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        parameter_groups(nn.Linear(2, 2), FixedWeighting({"a": 1.0}), lr=1.0, weight_decay=-1)
    with pytest.raises(ValueError, match="weighting_lr must be >= 0"):
        parameter_groups(
            nn.Linear(2, 2), FixedWeighting({"a": 1.0}), lr=1, weight_decay=0, weighting_lr=-1e-3
        )


def test_state_dict_round_trip_restores_log_variances():
    w = UncertaintyWeighting({"semantic": "softmax", "depth": "laplace"})
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([-1.25, 0.75]))
    buffer = io.BytesIO()
    torch.save(w.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"log_vars", "_extra_state"}
    same = UncertaintyWeighting({"semantic": "softmax", "depth": "laplace"})
    same.load_state_dict(state)
    assert same.log_variances() == {"semantic": -1.25, "depth": 0.75}
    # Another order of the same tasks: values are matched by name, not position.
    reordered = UncertaintyWeighting({"depth": "laplace", "semantic": "softmax"})
    reordered.load_state_dict(state)
    assert reordered.log_variances() == {"depth": 0.75, "semantic": -1.25}
    # Other tasks: an error naming both sets, and nothing is overwritten.
    other = UncertaintyWeighting({"semantic": "softmax", "instance": "laplace"}, init_log_var=0.5)
    with pytest.raises(RuntimeError, match=r"tasks \['semantic', 'depth'\].*'instance'"):
        other.load_state_dict(state)
    assert other.log_variances() == {"semantic": 0.5, "instance": 0.5}


def test_autocast_keeps_log_variances_and_total_in_float32():
    torch.manual_seed(0)
    model = nn.Linear(16, 4)
    weighting = UncertaintyWeighting({"reg": "gaussian", "cls": "softmax"})
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
        losses = {"reg": out.pow(2).mean(), "cls": F.cross_entropy(out, y)}
        total = weighting(losses)
    assert total.dtype == torch.float32
    total.backward()
    for p in weighting.parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32


def test_torch_compile_traces_one_graph_and_matches_eager():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    weighting = UncertaintyWeighting({"reg": "laplace", "cls": "softmax"}, init_log_var=0.3)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))

    def step(m, w):
        out = m(x)
        return w({"reg": out.abs().mean(), "cls": F.cross_entropy(out, y)})

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    eager_total = step(model, weighting)
    eager_grad = torch.autograd.grad(eager_total, list(weighting.parameters()))
    compiled_total = compiled(model, weighting)
    compiled_grad = torch.autograd.grad(compiled_total, list(weighting.parameters()))
    torch.testing.assert_close(compiled_total, eager_total)
    for a, b in zip(compiled_grad, eager_grad, strict=True):
        torch.testing.assert_close(a, b)


def test_tempered_softmax_is_the_exact_tempered_cross_entropy_without_a_penalty():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (6,))
    w = UncertaintyWeighting(
        {"cls": "tempered_softmax", "reg": "laplace"}, init_log_var={"cls": 0.7, "reg": 0.2}
    ).double()
    s_cls, s_reg = (float(v) for v in w.log_vars.detach())  # 0.7 and 0.2, as stored (float32)
    scale = w.logit_scale("cls")
    assert float(scale.detach()) == pytest.approx(math.exp(-s_cls), rel=1e-12)
    cls_loss = F.cross_entropy(logits * scale, labels)
    total = w({"cls": cls_loss, "reg": torch.tensor(2.0, dtype=torch.float64)})
    expected = (
        F.cross_entropy(logits * math.exp(-s_cls), labels)
        + math.exp(-0.5 * s_reg) * 2.0
        + 0.5 * s_reg
    )
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    total.backward()
    # s of the tempered task learns through the loss alone: d/ds CE(logits·e^-s).
    s = torch.tensor(s_cls, dtype=torch.float64, requires_grad=True)
    F.cross_entropy(logits.detach() * torch.exp(-s), labels).backward()
    assert float(w.log_vars.grad[0]) == pytest.approx(float(s.grad), rel=1e-10)
    assert w.effective_weights()["cls"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a tempered_softmax task"):
        w.logit_scale("reg")
    with pytest.raises(ValueError, match="no closed-form optimum"):
        optimal_log_variance("tempered_softmax", 1.0)


def test_log_variances_are_float32_whatever_the_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        weighting = UncertaintyWeighting({"a": "gaussian", "b": "laplace"}, init_log_var=0.1)
        losses = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}  # float64 losses
        total = weighting(losses)
    finally:
        torch.set_default_dtype(previous)
    assert weighting.log_vars.dtype == torch.float32
    # float64 losses are combined in float64 (never rounded down to the parameters' dtype)
    s = torch.tensor(0.1, dtype=torch.float32).double()
    expected = 0.5 * torch.exp(-s) * 2.0 + 0.5 * s + torch.exp(-0.5 * s) * 3.0 + 0.5 * s
    assert total.dtype == torch.float64 and torch.allclose(total, expected, rtol=0, atol=1e-12)


def test_missing_skip_leaves_a_task_out_of_a_call_and_its_s_untouched():
    likelihoods = {"a": "gaussian", "b": "laplace", "c": "softmax"}
    strict = UncertaintyWeighting(likelihoods)
    with pytest.raises(ValueError, match=r"no loss given for task\(s\) \['b'\]"):
        strict({"a": torch.tensor(1.0), "c": torch.tensor(2.0)})
    inits = {"a": 0.3, "b": -0.2, "c": 0.7}
    w = UncertaintyWeighting(likelihoods, init_log_var=inits, missing="skip")
    la, lc = torch.tensor(1.5), torch.tensor(2.0)
    total = w({"a": la, "c": lc})
    # by hand: Gaussian 0.5·exp(-s)·L + 0.5·s, softmax exp(-s)·L + 0.5·s; b adds nothing
    expected = 0.5 * math.exp(-0.3) * 1.5 + 0.5 * 0.3 + math.exp(-0.7) * 2.0 + 0.5 * 0.7
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad = w.log_vars.grad
    assert float(grad[w.index["b"]]) == 0.0
    assert float(grad[w.index["a"]]) == pytest.approx(-0.5 * math.exp(-0.3) * 1.5 + 0.5, rel=1e-6)
    # every task given: the same total as the strict weighting, bit for bit
    full = {"a": la, "b": torch.tensor(0.8), "c": lc}
    same = UncertaintyWeighting(likelihoods, init_log_var=inits)
    assert torch.equal(w(full), same(full))
    # no task at all: zero, and no gradient anywhere
    w.log_vars.grad = None
    empty = w({})
    empty.backward()
    assert float(empty.detach()) == 0.0 and not w.log_vars.grad.any()
    with pytest.raises(ValueError, match="missing must be"):
        UncertaintyWeighting(likelihoods, missing="ignore")
