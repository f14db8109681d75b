"""GLS, RLW, IMTL-L, DWA and GradNorm (SPEC §8) against hand computations on tiny inputs, their
state, and a training run of each (resumed exactly)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from uncertainty_mtl.config import ConfigError, load_config
from uncertainty_mtl.engine import train
from uncertainty_mtl.weighting import (
    DynamicWeightAverage,
    GeometricWeighting,
    GradNorm,
    IMTLLossWeighting,
    RandomWeighting,
    parameter_groups,
)


def leaf(value: float) -> torch.Tensor:
    return torch.tensor(value, requires_grad=True)


# -- GLS -------------------------------------------------------------------------------------------


def test_gls_is_the_geometric_mean_and_weighs_each_loss_by_total_over_t_l():
    a, b = leaf(2.0), leaf(8.0)
    weighting = GeometricWeighting(["a", "b"])
    total = weighting({"a": a, "b": b})
    assert float(total.detach()) == pytest.approx(4.0)  # sqrt(2·8)
    total.backward()
    assert float(a.grad) == pytest.approx(4.0 / (2 * 2.0))  # total / (T·L_a) = 1
    assert float(b.grad) == pytest.approx(4.0 / (2 * 8.0))  # 0.25
    assert weighting.effective_weights() == pytest.approx({"a": 1.0, "b": 0.25})


def test_gls_directions_do_not_depend_on_a_loss_unit():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x = torch.randn(5, 3)

    def grad(scale: float) -> torch.Tensor:
        net.zero_grad()
        out = net(x)
        losses = {"a": out[:, 0].pow(2).mean(), "b": scale * out[:, 1].abs().mean()}
        GeometricWeighting(["a", "b"])(losses).backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    # ×100 on one loss scales the total, hence the gradient, by 100^(1/2) and nothing else
    torch.testing.assert_close(grad(100.0), 10.0 * grad(1.0), rtol=1e-5, atol=1e-6)


def test_gls_leaves_a_zero_loss_out_instead_of_a_nan_gradient():
    a, b = leaf(0.0), leaf(9.0)
    total = GeometricWeighting(["a", "b"])({"a": a, "b": b})
    assert float(total.detach()) == pytest.approx(9.0)
    total.backward()
    assert float(a.grad) == 0.0 and float(b.grad) == pytest.approx(1.0)
    c, d = leaf(0.0), leaf(0.0)
    nothing = GeometricWeighting(["c", "d"])({"c": c, "d": d})
    nothing.backward()
    assert float(nothing.detach()) == 0.0 and float(c.grad) == 0.0 and float(d.grad) == 0.0


# -- RLW -------------------------------------------------------------------------------------------


def test_rlw_draws_softmax_of_normal_weights_from_its_own_generator():
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(3.0), "c": torch.tensor(5.0)}
    weighting = RandomWeighting(["a", "b", "c"], seed=7)
    before = torch.get_rng_state()
    expected = torch.Generator().manual_seed(7)
    for _ in range(3):
        w = torch.softmax(torch.randn(3, generator=expected), dim=0)
        total = weighting(losses)
        assert float(total) == pytest.approx(float(w @ torch.tensor([2.0, 3.0, 5.0])))
        assert list(weighting.effective_weights().values()) == pytest.approx(w.tolist())
        assert sum(weighting.effective_weights().values()) == pytest.approx(1.0)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator was not used


def test_rlw_state_dict_resumes_the_sequence_and_eval_uses_the_expectation():
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(4.0)}
    first = RandomWeighting(["a", "b"], seed=1)
    first(losses)
    first(losses)
    other = RandomWeighting(["a", "b"], seed=99)
    other.load_state_dict(first.state_dict())
    assert float(other(losses)) == float(first(losses))
    other.eval()
    state = other.generator.get_state()
    assert float(other(losses)) == pytest.approx(0.5 * 1.0 + 0.5 * 4.0)
    assert torch.equal(other.generator.get_state(), state)  # nothing drawn in eval mode


# -- IMTL-L ----------------------------------------------------------------------------------------


def test_imtl_l_term_and_its_minimiser_minus_log_l():
    weighting = IMTLLossWeighting(["a", "b"])
    with torch.no_grad():
        weighting.log_scales.copy_(torch.tensor([0.5, -1.0]))
    total = weighting({"a": torch.tensor(2.0), "b": torch.tensor(3.0)})
    expected = math.exp(0.5) * 2 - 0.5 + math.exp(-1.0) * 3 + 1.0
    assert float(total.detach()) == pytest.approx(expected)
    assert weighting.effective_weights() == pytest.approx({"a": math.exp(0.5), "b": math.exp(-1)})
    # at s = -log L the gradient in s vanishes: each weighted loss is 1
    with torch.no_grad():
        weighting.log_scales.copy_(-torch.tensor([2.0, 3.0]).log())
    weighting({"a": torch.tensor(2.0), "b": torch.tensor(3.0)}).backward()
    torch.testing.assert_close(weighting.log_scales.grad, torch.zeros(2), atol=1e-6, rtol=0)
    optimiser = torch.optim.SGD(IMTLLossWeighting(["x"]).parameters(), lr=0.1)
    learner = optimiser.param_groups[0]["params"][0]
    for _ in range(500):
        optimiser.zero_grad()
        (torch.exp(learner) * 5.0 - learner).sum().backward()
        optimiser.step()
    assert float(learner.detach()) == pytest.approx(-math.log(5.0), abs=1e-4)


def test_imtl_l_scales_are_float32_and_get_no_weight_decay():
    weighting = IMTLLossWeighting(["a", "b"])
    assert weighting.log_scales.dtype == torch.float32
    groups = parameter_groups(nn.Linear(2, 2), weighting, lr=0.1, weight_decay=1e-4)
    group = next(g for g in groups if g["name"] == "weighting")
    assert group["weight_decay"] == 0 and group["params"] == [weighting.log_scales]


# -- in a training run -----------------------------------------------------------------------------


def smoke(city, *overrides):
    base = [f"data.root={city}", "data.synthetic=false", "eval.cluster_method=null"]
    return load_config("smoke", [*base, *overrides])


@pytest.mark.parametrize(
    "kind", ["equal", "gls", "rlw", "imtl-l", "dwa", "gradnorm", "si", "uw-so", "famo"]
)
def test_each_kind_trains_logs_its_weights_and_resumes_exactly(kind, city, tmp_path, interrupted):
    # 16 frames, batch 4: 4 steps an epoch, so 14 steps reach DWA's third and fourth epochs
    config = smoke(city, f"weighting.kind={kind}", "optim.steps=14", "eval.every=7")
    interrupted(config, after=7)  # the last checkpoint is step 6, in the middle of epoch 1
    train(config, tmp_path / "split", resume=True, progress=False)
    whole = (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert (tmp_path / "split" / "metrics.jsonl").read_text() == whole
    records = [json.loads(line) for line in whole.splitlines() if '"lr"' in line]
    weights = [[r[f"weight/{t}"] for t in ("semantic", "instance", "depth")] for r in records]
    if kind == "equal":
        assert all(w == [1.0, 1.0, 1.0] for w in weights)
    elif kind == "rlw":
        assert all(sum(w) == pytest.approx(1.0) for w in weights)
        assert len({tuple(w) for w in weights}) == len(weights)  # new weights every step
    elif kind == "gls":
        for r, w in zip(records, weights, strict=True):
            losses = [r[f"loss/{t}"] for t in ("semantic", "instance", "depth")]
            total = math.prod(losses) ** (1 / 3)
            assert r["loss/total"] == pytest.approx(total, rel=1e-5)
            assert w == pytest.approx([total / (3 * x) for x in losses], rel=1e-5)
    elif kind == "dwa":
        tasks = ("semantic", "instance", "depth")
        means = {
            e: [
                sum(r[f"loss/{t}"] for r in records if r["epoch"] == e)
                / sum(r["epoch"] == e for r in records)
                for t in tasks
            ]
            for e in (0, 1, 2)
        }
        for r, w in zip(records, weights, strict=True):
            if r["epoch"] < 2:
                assert w == [1.0, 1.0, 1.0]
            else:
                ratio = torch.tensor(means[r["epoch"] - 1]) / torch.tensor(means[r["epoch"] - 2])
                expected = 3 * torch.softmax(ratio.double() / 2.0, dim=0)
                assert w == pytest.approx(expected.tolist(), rel=1e-5)
        assert {r["epoch"] for r in records} == {0, 1, 2, 3}
    elif kind in ("si", "uw-so", "famo"):
        for r, w in zip(records, weights, strict=True):
            losses = torch.tensor([r[f"loss/{t}"] for t in ("semantic", "instance", "depth")])
            if kind == "si":
                assert w == pytest.approx((1 / losses).tolist(), rel=1e-5)
            elif kind == "uw-so":
                assert w == pytest.approx((3 * torch.softmax(1 / losses, 0)).tolist(), rel=1e-4)
            else:  # z_t / (c·L_t) sums to 1
                assert sum(w) == pytest.approx(1.0, rel=1e-5)
    elif kind == "gradnorm":
        assert all(sum(w) == pytest.approx(3.0, rel=1e-5) for w in weights)
        assert len({tuple(w) for w in weights}) == len(weights)  # a step every step
    else:
        assert weights[0] != [1.0, 1.0, 1.0]  # exp(s) moved after the first step


def test_an_unknown_kind_is_a_config_error(city):
    with pytest.raises(ConfigError, match=r"weighting\.kind: 'nash'"):
        smoke(city, "weighting.kind=nash")


def test_method_parameters_are_keys_of_their_kind_only(city):
    from uncertainty_mtl.engine.builders import build_weighting

    dwa = build_weighting(smoke(city, "weighting.kind=dwa", "weighting.dwa.temperature=5"))
    assert isinstance(dwa, DynamicWeightAverage) and dwa.temperature == 5.0
    config = smoke(city, "weighting.kind=gradnorm", "weighting.gradnorm.alpha=0.5")
    gradnorm = build_weighting(config)
    assert isinstance(gradnorm, GradNorm)
    assert (gradnorm.alpha, gradnorm.lr) == (0.5, config.optim.lr)
    with pytest.raises(ConfigError, match=r"weighting\.dwa is for kind 'dwa' only"):
        smoke(city, "weighting.dwa.temperature=5")
    with pytest.raises(ConfigError, match=r"weighting\.dwa\.temperature must be"):
        smoke(city, "weighting.kind=dwa", "weighting.dwa.temperature=0")
    with pytest.raises(ConfigError, match=r"weighting\.gradnorm\.alpha must be"):
        smoke(city, "weighting.kind=gradnorm", "weighting.gradnorm.alpha=-1")
    with pytest.raises(ConfigError, match=r"weighting\.gradnorm: unknown key\(s\) \['beta'\]"):
        smoke(city, "weighting.kind=gradnorm", "weighting.gradnorm.beta=1")


# -- GradNorm -------------------------------------------------------------------------------------


def test_gradnorm_steps_its_weights_as_computed_by_hand():
    """Shared W = (w0, w1); L_a = (3·w0)², L_b = 5·w1: n_a = 18·w0, n_b = 5 (SPEC §8)."""
    shared = nn.Parameter(torch.tensor([1.0, 2.0]))
    weighting = GradNorm(["a", "b"], alpha=1.5, lr=0.01)
    assert list(weighting.parameters()) == []  # the network's optimiser never sees them

    def step(w0: float) -> None:
        with torch.no_grad():
            shared[0] = w0
        losses = {"a": (3 * shared[0]) ** 2, "b": 5 * shared[1]}
        total = weighting(losses)
        weighting.task_gradients(losses, [shared])
        total.backward()  # the graph is still alive
        weighting.after_step()

    def by_hand(weights, norms, losses, initial):
        ratios = [x / x0 for x, x0 in zip(losses, initial, strict=True)]
        rates = [r / (sum(ratios) / 2) for r in ratios]
        g = [w * n for w, n in zip(weights, norms, strict=True)]
        targets = [sum(g) / 2 * r**1.5 for r in rates]
        stepped = [
            w - 0.01 * math.copysign(1.0, gi - ti) * n
            for w, n, gi, ti in zip(weights, norms, g, targets, strict=True)
        ]
        return [2 * w / sum(stepped) for w in stepped]

    step(1.0)  # L = (9, 10), n = (18, 5); equal rates, so the larger gradient is pulled down
    first = by_hand([1.0, 1.0], [18.0, 5.0], [9.0, 10.0], [9.0, 10.0])
    assert first == pytest.approx([0.82 * 2 / 1.87, 1.05 * 2 / 1.87])
    assert list(weighting.effective_weights().values()) == pytest.approx(first, rel=1e-6)
    assert weighting.initial_losses.tolist() == [9.0, 10.0]
    step(0.5)  # L_a fell to 2.25 (a fast task: its weight must fall), n = (9, 5)
    second = by_hand(first, [9.0, 5.0], [2.25, 10.0], [9.0, 10.0])
    assert list(weighting.effective_weights().values()) == pytest.approx(second, rel=1e-6)
    assert sum(second) == pytest.approx(2.0) and second[0] < first[0]
    # the total is sum w_t·L_t with the weights of the call
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    assert float(weighting(losses)) == pytest.approx(2 * second[0] + 3 * second[1], rel=1e-6)


def test_gradnorm_state_round_trip_and_bad_arguments():
    shared = nn.Parameter(torch.tensor([1.0, 2.0]))
    weighting = GradNorm(["a", "b"], lr=0.1)
    losses = {"a": shared[0] ** 2, "b": 3 * shared[1]}
    weighting.task_gradients(losses, [shared])
    weighting.after_step()
    other = GradNorm(["a", "b"], lr=0.1)
    other.load_state_dict(weighting.state_dict())
    assert other.effective_weights() == weighting.effective_weights() != {"a": 1.0, "b": 1.0}
    assert other.initial_losses.tolist() == [1.0, 6.0]
    with pytest.raises(ValueError, match="alpha must be"):
        GradNorm(["a"], alpha=float("nan"))
    with pytest.raises(ValueError, match="last shared layer"):
        weighting.task_gradients(losses, [])


# -- DWA ------------------------------------------------------------------------------------------


def test_dwa_weights_follow_the_ratio_of_the_last_two_epoch_means():
    weighting = DynamicWeightAverage(["a", "b"], temperature=2.0)

    def epoch(*losses):
        for a, b in losses:
            weighting({"a": torch.tensor(a), "b": torch.tensor(b)})

    weighting.on_epoch(0)
    epoch((1.0, 4.0), (3.0, 4.0))  # means 2, 4
    weighting.on_epoch(1)
    assert weighting.effective_weights() == {"a": 1.0, "b": 1.0}  # the first two epochs
    epoch((1.0, 2.0), (1.0, 6.0))  # means 1, 4
    weighting.eval()
    weighting({"a": torch.tensor(100.0), "b": torch.tensor(0.0)})  # not a training call
    weighting.train()
    weighting.on_epoch(2)
    r = torch.tensor([1.0 / 2.0, 4.0 / 4.0])
    w = 2 * torch.softmax(r / 2.0, dim=0)
    assert list(weighting.effective_weights().values()) == pytest.approx(w.tolist())
    total = weighting({"a": torch.tensor(2.0), "b": torch.tensor(3.0)})
    assert float(total) == pytest.approx(float(w @ torch.tensor([2.0, 3.0])))


def test_dwa_state_carries_the_epoch_so_far():
    first = DynamicWeightAverage(["a", "b"])
    for epoch_losses in ([(2.0, 2.0)], [(1.0, 3.0)]):
        first.on_epoch(0)
        for a, b in epoch_losses:
            first({"a": torch.tensor(a), "b": torch.tensor(b)})
    first({"a": torch.tensor(5.0), "b": torch.tensor(1.0)})  # mid-epoch
    second = DynamicWeightAverage(["a", "b"])
    second.load_state_dict(first.state_dict())
    first.on_epoch(3)
    second.on_epoch(3)
    assert second.effective_weights() == first.effective_weights() != {"a": 1.0, "b": 1.0}


class _WithLoss(nn.Module):
    """Network and weighting in one module, wrapped in DDP as the engine wraps them."""

    def __init__(self, weighting: DynamicWeightAverage) -> None:
        super().__init__()
        self.net = nn.Linear(1, 1)
        self.weighting = weighting

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        zero = self.net(torch.ones(1, 1)).sum() * 0  # every parameter takes part
        return self.weighting({"a": a + zero, "b": b + zero})


def _dwa_losses(rank: int, epoch: int, step: int) -> tuple[float, float]:
    """Losses that differ between the ranks (rank 0's alone give other weights)."""
    return (1.0 + epoch + 3 * rank + step, 2.0 + 2 * rank * epoch)


def _dwa_rank(rank: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from uncertainty_mtl.engine import shutdown_distributed

    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"file://{out}/rv")
    try:
        weighting = DynamicWeightAverage(["a", "b"])
        ddp = DistributedDataParallel(_WithLoss(weighting))
        for epoch in range(4):
            weighting.on_epoch(epoch)
            for step in range(2):
                a, b = _dwa_losses(rank, epoch, step)
                ddp(torch.tensor(a), torch.tensor(b)).backward()
        torch.save(weighting.effective_weights(), f"{out}/rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_dwa_under_ddp_uses_the_means_over_every_rank(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_dwa_rank, args=(str(tmp_path),), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    def reference(world: list[int]) -> dict[str, float]:
        weighting = DynamicWeightAverage(["a", "b"])
        for epoch in range(4):
            weighting.on_epoch(epoch)
            for rank in world:
                for step in range(2):
                    a, b = _dwa_losses(rank, epoch, step)
                    weighting({"a": torch.tensor(a), "b": torch.tensor(b)})
        return weighting.effective_weights()

    assert ranks[0] == ranks[1]
    assert ranks[0] == pytest.approx(reference([0, 1]), rel=1e-6)
    assert reference([0]) != pytest.approx(reference([0, 1]), rel=1e-3)  # the test can fail


def test_gradnorm_refuses_a_bare_tensor_and_a_step_without_task_gradients():
    """Both used to leave every weight at 1.0 without a word."""
    layer = nn.Linear(3, 2)
    torch.manual_seed(0)
    x = torch.randn(8, 3)

    def losses():
        out = layer(x)
        return {"a": out[:, 0].pow(2).mean(), "b": out[:, 1].abs().mean()}

    weighting = GradNorm(["a", "b"], lr=0.5)
    step = losses()
    with pytest.raises(TypeError, match="list of the last shared layer's parameters"):
        weighting.task_gradients(step, layer.weight)
    weighting(step)
    with pytest.raises(RuntimeError, match=r"task_gradients\(losses, shared\) was not called"):
        weighting.after_step()
    # Called as documented, the weights move.
    for _ in range(2):
        step = losses()
        weighting.task_gradients(step, [layer.weight])
        weighting(step)
        weighting.after_step()
    assert max(abs(w - 1.0) for w in weighting.effective_weights().values()) > 1e-3
