"""Where a Fashion-MNIST training step of the two-task study spends its time, and what makes it
cheaper. Prints JSON; run on demand.

    python bench/bench_fashion_mnist.py [--part layers|variants|all] [--repeats 30]

* ``layers``: ``torch.profiler``'s self CPU time per operator over 20 steps of the study's step
  (Adam, learned weights, batch 64, 2 threads), the top 12, and the forward + backward time of
  each layer of the network measured by itself;
* ``variants``: seconds per step and per epoch (50,000 images) of the same step with one thing
  changed at a time: threads (1, 2), batch (32 to 256), ``channels_last``, ``torch.compile``,
  and two processes of one thread side by side (the study's default for two workers), also in
  ``channels_last`` at batches 32 to 128 (what the study's workers run).

Each step is the study's: ``model.features`` → heads → the two losses → the weighting → backward
→ Adam, on random images of 28×28 in [0, 1] and random labels (the cost does not depend on the
values).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from uncertainty_mtl.experiments.two_task.training import task_losses
from uncertainty_mtl.models import ConvAutoencoderClassifier
from uncertainty_mtl.weighting import UncertaintyWeighting, parameter_groups

TRAIN_IMAGES = 50_000
LIKELIHOODS = {"classification": "softmax", "reconstruction": "laplace"}


def make_step(
    batch: int, *, channels_last: bool = False, compile_model: bool = False
) -> Callable[[], None]:
    torch.manual_seed(0)
    model = ConvAutoencoderClassifier(28, mean=0.286, std=0.353)
    weighting = UncertaintyWeighting(LIKELIHOODS, convention="paper")
    optimiser = torch.optim.Adam(parameter_groups(model, weighting, lr=1e-4, weight_decay=0.0))
    images, labels = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def forward() -> dict[str, torch.Tensor]:
        return task_losses(model.outputs(model.features(images)), images, labels)

    run_forward = torch.compile(forward) if compile_model else forward

    def step() -> None:
        total = weighting(run_forward())
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()

    return step


def seconds_per_step(step: Callable[[], None], repeats: int, per_block: int = 5) -> float:
    for _ in range(3):
        step()
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_block):
            step()
        blocks.append((time.perf_counter() - start) / per_block)
    return statistics.median(blocks)


def variant(
    name: str, *, threads: int, batch: int = 64, repeats: int, **options: bool
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    step = make_step(batch, **options)
    seconds = seconds_per_step(step, repeats)
    steps_per_epoch = -(-TRAIN_IMAGES // batch)
    return {
        "variant": name,
        "threads": threads,
        "batch": batch,
        **options,
        "step_s": seconds,
        "images_per_s": batch / seconds,
        "epoch_s": seconds * steps_per_epoch,
    }


def _one_process(queue: Any, repeats: int, batch: int, channels_last: bool) -> None:
    torch.set_num_threads(1)
    queue.put(seconds_per_step(make_step(batch, channels_last=channels_last), repeats))


def side_by_side(repeats: int, batch: int = 64, channels_last: bool = False) -> dict[str, Any]:
    """Two one-thread processes stepping at once: each one's seconds per step, and the pair's
    images per second (what two study workers make)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    args = (queue, repeats, batch, channels_last)
    workers = [context.Process(target=_one_process, args=args) for _ in range(2)]
    for w in workers:
        w.start()
    seconds = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    step = statistics.mean(seconds)
    return {
        "variant": "two processes of 1 thread" + (", channels_last" if channels_last else ""),
        "threads": 1,
        "batch": batch,
        "channels_last": channels_last,
        "step_s": step,
        "images_per_s": 2 * batch / step,
        "epoch_s": step * -(-TRAIN_IMAGES // batch) / 2,
        "note": "step_s is each process's; images_per_s and epoch_s are the pair's",
    }


def variants(repeats: int) -> list[dict[str, Any]]:
    rows = [
        variant("baseline", threads=2, repeats=repeats),
        variant("1 thread", threads=1, repeats=repeats),
        side_by_side(repeats),
        variant("channels_last", threads=2, repeats=repeats, channels_last=True),
    ]
    for batch in (32, 128, 256):
        rows.append(variant(f"batch {batch}", threads=2, batch=batch, repeats=repeats))
    rows.append(variant("1 thread, channels_last", threads=1, repeats=repeats, channels_last=True))
    for batch in (32, 64, 128):  # what the study's two workers do
        rows.append(side_by_side(repeats, batch=batch, channels_last=True))
    try:
        rows.append(variant("torch.compile", threads=2, repeats=repeats, compile_model=True))
    except Exception as error:  # a machine without a working compiler: say so, keep the rest
        rows.append({"variant": "torch.compile", "error": f"{type(error).__name__}: {error}"})
    return rows


def layers(repeats: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(2)
    step = make_step(64)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [
        {
            "op": e.key,
            "self_ms_per_step": e.self_cpu_time_total / 1e3 / 20,
            "share": e.self_cpu_time_total / total,
        }
        for e in events[:12]
    ]
    # each layer's forward + backward by itself, on the activation it sees in the network
    model = ConvAutoencoderClassifier(28)
    x = torch.rand(64, 1, 28, 28)
    per_layer = []
    for name, module in [
        *(("encoder." + n, m) for n, m in model.encoder.named_children()),
        *(("reconstruction." + n, m) for n, m in model.heads["reconstruction"].named_children()),
    ]:
        if name == "reconstruction.0":
            x = model.encoder(torch.rand(64, 1, 28, 28))
        inp = x.detach().requires_grad_()

        def fwd_bwd(module: torch.nn.Module = module, inp: torch.Tensor = inp) -> None:
            module(inp + 0).sum().backward()  # + 0: an in-place ReLU may not write a leaf

        per_layer.append(
            {
                "layer": name,
                "module": repr(module).split("\n")[0][:60],
                "input": list(inp.shape),
                "fwd_bwd_ms": 1e3 * seconds_per_step(fwd_bwd, repeats),
            }
        )
        with torch.no_grad():
            x = module(inp.detach().clone())
    return {"profile_top_ops": top, "per_layer": per_layer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=["layers", "variants", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    out: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpus": torch.get_num_threads(),
    }
    if args.part in ("layers", "all"):
        out["layers"] = layers(args.repeats)
    if args.part in ("variants", "all"):
        out["variants"] = variants(args.repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
