"""What the uncertainty weighting costs in a training step. Prints JSON; run on demand.

One Adam step of the two-task digits model (batch 64, the study's setting) with
``UncertaintyWeighting`` and with ``FixedWeighting``, measured in interleaved blocks so that
drift in the machine's speed hits both alike; plus the weighting's own forward + backward on
three scalar losses, by itself.

    python bench/bench_weighting.py [--threads N] [--blocks 100] [--steps 20] [--fused]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from uncertainty_mtl import FixedWeighting, UncertaintyWeighting, parameter_groups
from uncertainty_mtl.models import ConvAutoencoderClassifier

LIKELIHOODS = {"classification": "softmax", "reconstruction": "laplace"}


def make_step(weighting, images, labels, *, fused: bool):
    torch.manual_seed(0)
    model = ConvAutoencoderClassifier(8)
    optimiser = torch.optim.Adam(
        # lr 0: every step does all the work of an Adam step but the weights stay put, so both
        # variants time the same computation instead of two models drifting apart.
        parameter_groups(model, weighting, lr=0.0, weight_decay=0.0),
        fused=fused or None,
    )

    def step():
        out = model(images)
        losses = {
            "classification": F.cross_entropy(out["classification"], labels),
            "reconstruction": (out["reconstruction"] - images).abs().mean(),
        }
        total = weighting(losses)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()

    return step


def time_block(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fused", action="store_true", help="fused Adam (one kernel per group)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    steps = {
        "fixed": make_step(
            FixedWeighting({"classification": 0.5, "reconstruction": 0.5}),
            images,
            labels,
            fused=args.fused,
        ),
        "uncertainty": make_step(
            UncertaintyWeighting(LIKELIHOODS), images, labels, fused=args.fused
        ),
    }
    for fn in steps.values():
        time_block(fn, 20)  # warm-up
    # Paired rounds, in alternating order, so that drift and order effects cancel in the ratio.
    blocks: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for round_ in range(args.blocks):
        for name in names if round_ % 2 == 0 else names[::-1]:
            blocks[name].append(time_block(steps[name], args.steps))
    step_ms = {k: 1e3 * statistics.median(v) for k, v in blocks.items()}
    ratios = [u / f for u, f in zip(blocks["uncertainty"], blocks["fixed"], strict=True)]
    quartiles = statistics.quantiles(ratios, n=4)

    calls = {}
    for name, weighting in (
        ("fixed", FixedWeighting({"classification": 0.5, "reconstruction": 0.5})),
        ("uncertainty", UncertaintyWeighting(LIKELIHOODS)),
    ):
        losses = {t: torch.tensor(1.0, requires_grad=True) for t in LIKELIHOODS}

        def call(weighting=weighting, losses=losses):
            weighting(losses).backward()

        time_block(call, 200)
        calls[name] = 1e6 * statistics.median(time_block(call, 500) for _ in range(10))

    print(
        json.dumps(
            {
                "benchmark": "weighting_overhead",
                "model": "two-task digits auto-encoder, batch 64, Adam",
                "torch": torch.__version__,
                "machine": platform.machine(),
                "threads": args.threads,
                "optimiser": "Adam (fused)" if args.fused else "Adam (for-loop, the CPU default)",
                "step_ms": step_ms,
                "step_ratio_uncertainty_over_fixed": statistics.median(ratios),
                "step_ratio_iqr": [quartiles[0], quartiles[2]],
                "weighting_call_us": calls,
                "uncertainty_call_share_of_step": calls["uncertainty"]
                / (1e3 * step_ms["uncertainty"]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
