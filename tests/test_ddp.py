"""Under DDP (gloo, 2 CPU processes) every rank must keep the same log-variances.

The documented way: one module owns the network *and* the weighting and returns the total loss;
DDP wraps that module, so the log-variances' gradients are all-reduced like the network's.
Because every task loss is a batch mean and the weighting is linear in each loss, 2 ranks × batch B
must then equal one process with batch 2B, which is what this test checks. Wrapping only the
network lets the ranks' log-variances drift apart; the test shows that too, so it can fail.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from uncertainty_mtl import UncertaintyWeighting, parameter_groups
from uncertainty_mtl.engine import shutdown_distributed

WORLD = 2
BATCH = 8  # per rank
STEPS = 15
LIKELIHOODS = {"reg": "laplace", "cls": "softmax"}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(5, 16)
        self.reg = nn.Linear(16, 1)
        self.cls = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.trunk(x))
        return {"reg": self.reg(h).squeeze(1), "cls": self.cls(h)}


def losses_of(out, y_reg, y_cls):
    return {"reg": F.l1_loss(out["reg"], y_reg), "cls": F.cross_entropy(out["cls"], y_cls)}


class NetWithLoss(nn.Module):
    """The module to wrap in DDP: network and weighting together, returning the total."""

    def __init__(self, net: nn.Module, weighting: UncertaintyWeighting) -> None:
        super().__init__()
        self.net = net
        self.weighting = weighting

    def forward(self, x, y_reg, y_cls):
        return self.weighting(losses_of(self.net(x), y_reg, y_cls))


def batch(step: int, size: int):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(size, 5, generator=g)
    return (
        x,
        x[:, 0] * 3.0 + torch.randn(size, generator=g),
        torch.randint(0, 3, (size,), generator=g),
    )


def make_pair():
    torch.manual_seed(0)
    return Net(), UncertaintyWeighting(LIKELIHOODS, init_log_var={"reg": 1.0})


def optimiser_for(net, weighting):
    return torch.optim.SGD(
        parameter_groups(net, weighting, lr=0.05, weight_decay=1e-3, weighting_lr=0.2), momentum=0.9
    )


def _train_rank(rank: int, out: str, mode: str) -> None:
    net, weighting = make_pair()
    optimiser = optimiser_for(net, weighting)
    if mode == "together":
        ddp = DistributedDataParallel(NetWithLoss(net, weighting))
    else:
        ddp = DistributedDataParallel(net)
    for step in range(STEPS):
        x, y_reg, y_cls = (t[rank * BATCH : (rank + 1) * BATCH] for t in batch(step, WORLD * BATCH))
        if mode == "together":
            total = ddp(x, y_reg, y_cls)
        else:
            total = weighting(losses_of(ddp(x), y_reg, y_cls))
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    _save(rank, out, net, weighting)


def _save(rank: int, out: str, net: nn.Module, weighting: UncertaintyWeighting) -> None:
    torch.save(
        {"log_vars": weighting.log_variances(), "net": net.state_dict()},
        Path(out) / f"rank{rank}.pt",
    )


def _worker(rank: int, out: str, mode: str) -> None:
    # A file rendezvous: no port to pick, so no race with other processes for one.
    rendezvous = f"file://{Path(out) / 'rendezvous'}"
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=rendezvous)
    torch.set_num_threads(1)
    try:
        # DDP objects die with this call, before the shutdown
        if mode == "skip":
            _train_skipping_rank(rank, out)
        else:
            _train_rank(rank, out, mode)
    finally:
        shutdown_distributed()


def run_ranks(tmp_path: Path, mode: str) -> list[dict]:
    mp.spawn(_worker, args=(str(tmp_path), mode), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def single_process_reference() -> dict:
    net, weighting = make_pair()
    optimiser = optimiser_for(net, weighting)
    for step in range(STEPS):
        total = weighting(
            losses_of(net(batch(step, WORLD * BATCH)[0]), *batch(step, WORLD * BATCH)[1:])
        )
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    return {"log_vars": weighting.log_variances(), "net": net.state_dict()}


def test_weighting_inside_the_ddp_module_keeps_ranks_identical_and_equals_one_big_batch(tmp_path):
    ranks = run_ranks(tmp_path, "together")
    reference = single_process_reference()
    assert ranks[0]["log_vars"] == ranks[1]["log_vars"]  # bitwise: same all-reduced gradient
    for task, value in reference["log_vars"].items():
        assert abs(ranks[0]["log_vars"][task] - value) < 1e-5, task
    assert abs(reference["log_vars"]["reg"] - 1.0) > 0.05  # the log-variances did move
    for name, tensor in reference["net"].items():
        torch.testing.assert_close(ranks[0]["net"][name], tensor, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ranks[1]["net"][name], ranks[0]["net"][name], rtol=0, atol=0)


def test_weighting_outside_ddp_lets_the_ranks_log_variances_drift_apart(tmp_path):
    ranks = run_ranks(tmp_path, "network-only")
    drift = max(abs(ranks[0]["log_vars"][t] - ranks[1]["log_vars"][t]) for t in LIKELIHOODS)
    assert drift > 1e-3


# -- tasks missing from a batch (missing="skip") ---------------------------------------------------


def _has_reg(step: int, rank: int) -> bool:
    """Odd steps: rank 1's batch has no regression labels (rank 0's has them every step)."""
    return step % 2 == 0 or rank == 0


def make_skipping_pair():
    torch.manual_seed(0)
    return Net(), UncertaintyWeighting(LIKELIHOODS, init_log_var={"reg": 1.0}, missing="skip")


class SkippingNetWithLoss(NetWithLoss):
    def forward(self, x, y_reg, y_cls, has_reg: bool):
        losses = losses_of(self.net(x), y_reg, y_cls)
        if not has_reg:
            del losses["reg"]
        return self.weighting(losses)


def _train_skipping_rank(rank: int, out: str) -> None:
    net, weighting = make_skipping_pair()
    optimiser = optimiser_for(net, weighting)
    # A rank without regression labels leaves the regression head out of that step's graph.
    ddp = DistributedDataParallel(SkippingNetWithLoss(net, weighting), find_unused_parameters=True)
    for step in range(STEPS):
        x, y_reg, y_cls = (t[rank * BATCH : (rank + 1) * BATCH] for t in batch(step, WORLD * BATCH))
        total = ddp(x, y_reg, y_cls, _has_reg(step, rank))
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    _save(rank, out, net, weighting)


def test_a_task_missing_on_one_rank_equals_one_process_over_the_labelled_examples(tmp_path):
    ranks = run_ranks(tmp_path, "skip")
    # One process over both ranks' examples, each task's loss over the examples labelled for it.
    net, weighting = make_skipping_pair()
    optimiser = optimiser_for(net, weighting)
    for step in range(STEPS):
        x, y_reg, y_cls = batch(step, WORLD * BATCH)
        out = net(x)
        labelled = torch.cat(
            [torch.full((BATCH,), _has_reg(step, r), dtype=torch.bool) for r in range(WORLD)]
        )
        losses = {
            "reg": F.l1_loss(out["reg"][labelled], y_reg[labelled]),
            "cls": F.cross_entropy(out["cls"], y_cls),
        }
        total = weighting(losses)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    assert ranks[0]["log_vars"] == ranks[1]["log_vars"]
    for task, value in weighting.log_variances().items():
        assert abs(ranks[0]["log_vars"][task] - value) < 1e-5, task
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(ranks[0]["net"][name], tensor, rtol=1e-5, atol=1e-6)
