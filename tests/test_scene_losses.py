"""The scene losses against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from uncertainty_mtl.tasks.registry import scene_losses


def targets():
    semantic = torch.tensor([[[0, 1], [255, 1]]])
    offset = torch.zeros(1, 2, 2, 2)
    offset[0, :, 0, 0] = torch.tensor([1.0, -2.0])
    offset[0, :, 1, 1] = torch.tensor([0.5, 0.5])
    return {
        "semantic": semantic,
        "instance_offset": offset,
        "instance_mask": torch.tensor([[[True, False], [False, True]]]),
        "inverse_depth": torch.tensor([[[2.0, 0.0], [1.0, 3.0]]]),
        "depth_mask": torch.tensor([[[True, True], [False, True]]]),
    }


def test_losses_equal_hand_computations():
    logits = torch.zeros(1, 19, 2, 2)
    logits[0, 0, 0, 0] = 2.0  # correct class 0 at (0, 0)
    logits[0, 5, 0, 1] = 1.0  # wrong class at (0, 1), label 1
    instance = torch.zeros(1, 2, 2, 2)
    instance[0, :, 0, 0] = torch.tensor([0.0, 0.0])  # error |1| + |-2| = 3
    instance[0, :, 1, 1] = torch.tensor([1.0, 1.0])  # error 0.5 + 0.5 = 1
    instance[0, :, 0, 1] = torch.tensor([50.0, 50.0])  # outside the mask: ignored
    depth = torch.tensor([[[[1.0, 1.0], [9.0, 3.5]]]])  # errors 1, 1, (ignored), 0.5
    losses = scene_losses(
        {"semantic": logits, "instance": instance, "depth": depth},
        targets(),
        ["semantic", "instance", "depth"],
    )
    ce00 = -(2.0 - math.log(math.exp(2.0) + 18))
    ce01 = -(0.0 - math.log(math.exp(1.0) + 18))
    ce11 = math.log(19)
    assert float(losses["semantic"].detach()) == pytest.approx((ce00 + ce01 + ce11) / 3, rel=1e-6)
    assert float(losses["instance"].detach()) == pytest.approx((3 + 1) / 2)
    assert float(losses["depth"].detach()) == pytest.approx((1 + 1 + 0.5) / 3)


def test_empty_masks_give_zero_with_a_gradient():
    t = targets()
    t["semantic"][:] = 255
    t["instance_mask"][:] = False
    t["depth_mask"][:] = False
    outputs = {
        k: torch.randn(1, c, 2, 2, requires_grad=True)
        for k, c in (("semantic", 19), ("instance", 2), ("depth", 1))
    }
    losses = scene_losses(outputs, t, ["semantic", "instance", "depth"])
    for task, loss in losses.items():
        assert float(loss.detach()) == 0.0, task
        loss.backward()
        assert torch.isfinite(outputs[task].grad).all()


def test_a_scene_run_weighs_each_loss_by_the_paper_s_likelihood():
    """The weighting a scene run builds (likelihoods and event dimensions from the task
    registry) is stationary in s exactly at the minimisers of the paper's terms, by hand:
    softmax (eq. 10) ``exp(-s)·L + s/2`` -> ``log 2L``; Laplace (L1 losses) ``exp(-s/2)·L +
    (d/2)·s`` -> ``2·log(L/d)``, with d = 2 for the offsets' ``|dx| + |dy|`` and 1 for depth."""
    from uncertainty_mtl.config import load_config
    from uncertainty_mtl.engine.builders import build_weighting

    weighting = build_weighting(load_config("smoke"))
    losses = {"semantic": 3.0, "instance": 5.0, "depth": 7.0}
    by_hand = {"semantic": math.log(6.0), "instance": 2 * math.log(2.5), "depth": 2 * math.log(7)}
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([by_hand[t] for t in weighting.tasks]))
    total = weighting({t: torch.tensor(v) for t, v in losses.items()})
    (grad,) = torch.autograd.grad(total, weighting.log_vars)
    torch.testing.assert_close(grad, torch.zeros(3), rtol=0, atol=1e-6)
    # Elsewhere it is not: a Gaussian depth term's optimum log(L) is not stationary here.
    with torch.no_grad():
        weighting.log_vars[weighting.index["depth"]] = math.log(7.0)
    total = weighting({t: torch.tensor(v) for t, v in losses.items()})
    (grad,) = torch.autograd.grad(total, weighting.log_vars)
    assert abs(float(grad[weighting.index["depth"]])) > 0.1
