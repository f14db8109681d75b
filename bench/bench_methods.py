"""What each method of the benchmark costs in a training step. Prints JSON; run on demand.

    python bench/bench_methods.py [--part steps|tasks|two-task|city|all] [--configs NAME ...]
                                  [--datasets digits fashion-mnist] [--presets cpu-lite cpu]
                                  [--repeats 5]

* ``steps``: one full training update (forward, the method's backward and hooks, SGD step) of a
  shipped config's network on a random batch, per ``weighting.kind``, the kinds interleaved
  round by round so that drift in the machine's speed hits all alike; the median seconds and
  the ratio to ``equal``. The paper preset's ResNet-101 runs at batch 2 here (a CPU).
* ``tasks``: how a gradient aggregator's update grows with the number of tasks: the cpu preset's
  encoder and ASPP shared by T one-layer heads (T = 2, 3, 5, 8), the update of each aggregator
  against the plain sum's.
* ``two-task``: one training step of the two-task study (its auto-encoder, Adam, its batch) per
  method of the tuned protocol, on each data set's image size, 1 thread, the methods in turns
  (:func:`uncertainty_mtl.experiments.two_task.cost.step_costs`, what the tuned table's figure
  plots).
* ``city``: one training step of the city's methods table per row (every method, the trainer's
  update at the preset's SGD rate), on random batches of each scene preset's size, 1 thread, the
  methods in turns (:func:`uncertainty_mtl.experiments.paper.scene_cost.scene_step_costs`, what the
  city table's figure plots).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch
from torch import nn

from uncertainty_mtl.config import load_config
from uncertainty_mtl.engine.builders import NetWithLoss, build_model, build_weighting, grad_scaler
from uncertainty_mtl.engine.step import update
from uncertainty_mtl.experiments import two_task
from uncertainty_mtl.experiments.benchmark.methods import (
    AGGREGATORS,
    CITY_METHODS,
    EVERY_METHOD,
    LOSS_WEIGHTINGS,
    method_run,
)
from uncertainty_mtl.experiments.paper.scene import SceneStudy
from uncertainty_mtl.experiments.paper.scene_cost import input_size, random_batch, scene_step_costs
from uncertainty_mtl.experiments.two_task.cost import step_costs
from uncertainty_mtl.weighting import FixedWeighting, parameter_groups
from uncertainty_mtl.weighting.aggregators import GradientAggregation

BATCH_CAP = {"paper/tiny-cityscapes/three-task": 2}


def method_step(name: str, kind: str) -> Any:
    config = load_config(name, ["model.pretrained=false", f"weighting.kind={kind}"])
    h, w = input_size(config)
    batch = min(config.optim.batch_size, BATCH_CAP.get(name, 10**9))
    torch.manual_seed(0)
    model, weighting = build_model(config), build_weighting(config)
    joint = NetWithLoss(model, weighting)
    # lr 0: every step does all of a step's work but the network stays put, so that every kind
    # times the same computation
    optimiser = torch.optim.SGD(
        parameter_groups(model, weighting, lr=0.0, weight_decay=1e-4), lr=0.0, momentum=0.9
    )
    scaler = grad_scaler(config, torch.device("cpu"))
    images, targets = random_batch(config.trained_tasks, batch, h, w)

    def step() -> None:
        total, losses, features = joint(images, targets)
        update(model, weighting, optimiser, scaler, total, losses, features)

    return step, {"input": [h, w], "batch": batch}


def steps(names: list[str], repeats: int) -> list[dict[str, Any]]:
    out = []
    kinds = [*LOSS_WEIGHTINGS, *AGGREGATORS]
    for name in names:
        built = {kind: method_step(name, kind) for kind in kinds}
        for step, _ in built.values():
            step()  # warm-up
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(repeats):
            for kind, (step, _) in built.items():
                start = time.perf_counter()
                step()
                times[kind].append(time.perf_counter() - start)
        equal = statistics.median(times["equal"])
        out.append(
            {
                "config": name,
                **next(iter(built.values()))[1],
                "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
                "relative_to_equal": {k: statistics.median(v) / equal for k, v in times.items()},
            }
        )
    return out


class _Shared(nn.Module):
    """The cpu preset's encoder and ASPP with T one-layer heads."""

    def __init__(self, tasks: int) -> None:
        super().__init__()
        net = build_model(load_config("cpu/three-task"))
        self.encoder, self.aspp = net.encoder, net.aspp
        self.heads = nn.ModuleList(nn.Conv2d(64, 1, 1) for _ in range(tasks))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = self.aspp(self.encoder(images))
        return features, [head(features).pow(2).mean() for head in self.heads]


def _median_update(
    net: _Shared, weighting: Any, images: torch.Tensor, names: list[str], repeats: int
) -> float:
    shared = [*net.encoder.parameters(), *net.aspp.parameters()]

    def once() -> None:
        net.zero_grad(set_to_none=True)
        features, losses = net(images)
        by_name = dict(zip(names, losses, strict=True))
        if isinstance(weighting, GradientAggregation):
            weighting.backward_from_features(by_name, features, shared)
        else:
            weighting(by_name).backward()

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def task_growth(repeats: int) -> list[dict[str, Any]]:
    out = []
    images = torch.randn(8, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    for tasks in (2, 3, 5, 8):
        torch.manual_seed(0)
        net = _Shared(tasks)
        names = [f"t{i}" for i in range(tasks)]
        row: dict[str, Any] = {"tasks": tasks}
        row["sum"] = _median_update(
            net, FixedWeighting(dict.fromkeys(names, 1.0)), images, names, repeats
        )
        for kind in AGGREGATORS:
            row[kind] = _median_update(
                net, GradientAggregation(names, kind), images, names, repeats
            )
        row["relative_to_sum"] = {k: row[k] / row["sum"] for k in AGGREGATORS}
        out.append(row)
    return out


def two_task_steps(datasets: list[str], repeats: int) -> list[dict[str, Any]]:
    out = []
    for dataset in datasets:
        study = two_task.TwoTaskStudy(two_task.preset_config(dataset), "cpu")
        runs = {
            m: study.resolve(two_task.method_run(m), parallel=True)
            for m in EVERY_METHOD
            if m not in ("uncertainty", "approx-optimal")
        }
        runs["uncertainty"] = study.resolve(two_task.learned_run("likelihood"), parallel=True)
        costs = step_costs(runs, rounds=repeats)
        out.append(
            {
                "dataset": dataset,
                "batch": study.config.batch_size,
                "seconds_per_step": {k: c["step_seconds"] for k, c in costs.items()},
                "relative_to_equal": {k: c["cost_vs_equal"] for k, c in costs.items()},
            }
        )
    return out


def city_steps(presets: list[str], repeats: int) -> list[dict[str, Any]]:
    out = []
    for preset in presets:
        study = SceneStudy(preset)
        # the approx.-optimal row's weights do not change what a step computes
        configs = {
            m: study.resolve(method_run(m, 0, (1.0, 1.0, 1.0)), parallel=True) for m in CITY_METHODS
        }
        costs = scene_step_costs(configs, rounds=repeats)
        out.append(
            {
                "preset": preset,
                "input": list(input_size(configs["equal"])),
                "batch": configs["equal"].optim.batch_size,
                "seconds_per_step": {k: c["step_seconds"] for k, c in costs.items()},
                "relative_to_equal": {k: c["cost_vs_equal"] for k, c in costs.items()},
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--part", choices=["steps", "tasks", "two-task", "city", "all"], default="all"
    )
    parser.add_argument("--presets", nargs="+", default=["cpu-lite", "cpu"])
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"])
    parser.add_argument(
        "--configs", nargs="+", default=["cpu/three-task", "paper/tiny-cityscapes/three-task"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out: dict[str, Any] = {
        "benchmark": "methods",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if args.part in ("steps", "all"):
        out["steps"] = steps(args.configs, args.repeats)
    if args.part in ("tasks", "all"):
        out["tasks"] = task_growth(args.repeats)
    if args.part in ("two-task", "all"):
        out["two_task"] = two_task_steps(args.datasets, args.repeats)
    if args.part in ("city", "all"):
        out["city"] = city_steps(args.presets, args.repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
