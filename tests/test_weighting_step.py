"""``weighting_step``: the one update every method needs, equal to the hand-written sequence of
each family, and a clear error when what a method needs is not given."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uncertainty_mtl.weighting import weighting_backward, weighting_step
from uncertainty_mtl.weighting.registry import AGGREGATOR, METHODS, BuildArgs, build_method

TASKS = ["class", "value"]


def _net() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "trunk": nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh()),
            "class": nn.Linear(16, 3),
            "value": nn.Linear(16, 1),
        }
    )


def _losses(net: nn.ModuleDict, features: torch.Tensor, x: torch.Tensor) -> dict:
    return {
        "class": F.cross_entropy(net["class"](features), x[:, :3].argmax(1)),
        "value": F.l1_loss(net["value"](features)[:, 0], x[:, 3]),
    }


def _method(kind: str):
    args = BuildArgs(TASKS, lr=0.01, likelihoods={"class": "softmax", "value": "laplace"})
    return build_method(kind, args)


def _train(kind: str, steps: int, update) -> nn.ModuleDict:
    """``steps`` updates of a fresh net with method ``kind``, each made by ``update``."""
    net, method = _net(), _method(kind)
    optimiser = torch.optim.SGD([*net.parameters(), *method.parameters()], lr=0.05)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 6, generator=generator)
        features = net["trunk"](x)
        update(net, method, optimiser, features, _losses(net, features, x))
    return net


def _by_hand(net, method, optimiser, features, losses) -> None:
    """What each family's loop writes by hand (as umtl's loop did before the helper)."""
    total = method(losses)
    if method.needs_task_gradients:
        method.task_gradients(losses, list(net["trunk"][2].parameters()))
    optimiser.zero_grad()
    if method.needs_features:
        method.backward_from_features(losses, features, list(net["trunk"].parameters()))
    else:
        total.backward()
    optimiser.step()
    method.after_step()


def _with_helper(net, method, optimiser, features, losses) -> None:
    total = weighting_step(
        method,
        losses,
        optimiser,
        features=features,
        shared=net["trunk"].parameters(),
        last_shared=net["trunk"][2].parameters(),
    )
    assert total.ndim == 0 and not total.requires_grad


@pytest.mark.parametrize(
    "kind", ["equal", "uncertainty", "gradnorm", "famo", "fairgrad", "nash-mtl"]
)
def test_the_helper_makes_each_familys_update_exactly(kind):
    expected, got = _train(kind, 4, _by_hand), _train(kind, 4, _with_helper)
    untrained = _net()
    for (name, a), b, c in zip(
        expected.named_parameters(), got.parameters(), untrained.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name  # it trained


def test_every_method_of_the_registry_steps_through_the_one_call():
    for kind in METHODS:
        if kind == "fixed":  # needs its weights, a plain loss weighting otherwise
            continue
        got, before = _train(kind, 2, _with_helper), _net()
        moved = [
            not torch.equal(a, b)
            for a, b in zip(got.parameters(), before.parameters(), strict=True)
        ]
        assert all(moved), kind  # the trunk and both heads were updated


def test_what_a_method_needs_is_asked_for_by_name():
    net = _net()
    x = torch.randn(8, 6)
    features = net["trunk"](x)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    aggregator = _method("fairgrad")
    assert METHODS["fairgrad"].family == AGGREGATOR
    with pytest.raises(ValueError, match=r"features=.*shared="):
        weighting_step(aggregator, _losses(net, features, x), optimiser)
    with pytest.raises(ValueError, match="last_shared="):
        weighting_backward(_method("gradnorm"), _losses(net, features, x))


def test_left_out_options_take_the_registrys_defaults_and_unknown_ones_are_refused():
    assert _method("gradnorm").alpha == METHODS["gradnorm"].options[0].default
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['alhpa'\]"):
        build_method("gradnorm", BuildArgs(TASKS, options={"alhpa": 1.0}))


def test_an_aggregator_built_directly_names_the_option_it_lacks():
    from uncertainty_mtl.weighting.aggregators import GradientAggregation
    from uncertainty_mtl.weighting.registry import option_values

    with pytest.raises(ValueError, match=r"aggregator 'cagrad' needs its option 'c'.*build_method"):
        GradientAggregation(TASKS, "cagrad")
    built = GradientAggregation(TASKS, "cagrad", options=option_values("cagrad"))
    assert built.aggregator.c == METHODS["cagrad"].options[0].default
