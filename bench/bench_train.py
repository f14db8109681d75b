"""Training speed of the scene network on this machine. Prints JSON; run on demand.

    python bench/bench_train.py [--part steps|scaling|loop|inference|checks|all]
                                [--configs NAME ...]

* ``steps``: per shipped config, the time of one training step (forward, backward, SGD) on a
  random batch of the config's input size, images/s, FLOPs per step counted by
  ``torch.utils.flop_counter``, and the achieved FLOP/s as a fraction of this machine's
  ``torch.mm`` peak and of one large convolution's (both measured here, float32, all threads);
* ``scaling``: how a step's cost grows with the input size (32×64 to 256×512), the small
  encoder's width, the batch, the tasks and the threads, one at a time from the cpu preset's
  network, with the same ceilings (measured with all threads); and the two-task networks'
  step (digits, Fashion-MNIST);
* ``loop``: seconds per step of ``engine.train`` against a plain hand-written loop over the same
  model, data and optimiser (our overhead), and with ``UncertaintyWeighting`` against
  ``FixedWeighting``; the ``cpu/three-task`` config on the cached synthetic city;
* ``inference``: forward time of one three-task network against three single-task networks;
* ``checks``: the cost of the check that every parameter is finite (SPEC §10), made before
  anything is logged, validated or saved, against a step, per CPU config; per step at the
  config's ``run.log_every``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from uncertainty_mtl.config import load_config, shipped_configs
from uncertainty_mtl.engine import build_model, build_weighting, train
from uncertainty_mtl.experiments.paper.scene_cost import input_size, random_batch
from uncertainty_mtl.tasks.registry import SCENE_TASKS, scene_losses
from uncertainty_mtl.weighting import parameter_groups

# Full-resolution crops at batch 16 take minutes a step on a CPU: measured at a smaller batch.
BATCH_CAP = {"paper/cityscapes/three-task": 2}


def matmul_peak(n: int = 3072, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def conv_peak(repeats: int = 5) -> float:
    """FLOP/s of one large 3×3 convolution (512 channels): on some CPUs oneDNN's convolutions
    run well above ``torch.mm``, so this is the better ceiling for a convolutional network."""
    x, conv = torch.randn(8, 512, 32, 64), torch.nn.Conv2d(512, 512, 3, padding=1)
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
    return 2 * 8 * 512 * 512 * 9 * 32 * 64 / min(times)


def step_speed(
    name: str,
    peak: float,
    conv: float,
    repeats: int,
    overrides: list[str] | None = None,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    config = load_config(name, ["model.pretrained=false", *(overrides or [])])
    h, w = size or input_size(config)
    batch = min(config.optim.batch_size, BATCH_CAP.get(name, 10**9))
    torch.manual_seed(0)
    model, weighting = build_model(config), build_weighting(config)
    optimiser = torch.optim.SGD(
        parameter_groups(model, weighting, lr=1e-3, weight_decay=1e-4), lr=1e-3, momentum=0.9
    )
    images, targets = random_batch(config.trained_tasks, batch, h, w)

    def step() -> None:
        total = weighting(scene_losses(model(images), targets, model.tasks))
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()

    step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    start = time.perf_counter()
    step()
    times = [time.perf_counter() - start]
    # Steps of seconds vary little: fewer repeats for them (about 20 s per config at most).
    for _ in range(max(1, min(repeats, int(20 / times[0]))) - 1):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "config": name,
        "overrides": overrides or [],
        "backbone": config.model.backbone,
        "tasks": config.trained_tasks,
        "input": [h, w],
        "batch": batch,
        "config_batch": config.optim.batch_size,
        "step_s": seconds,
        "images_per_s": batch / seconds,
        "gflop_per_step": flops / 1e9,
        "gflop_per_s": flops / seconds / 1e9,
        "fraction_of_mm_peak": flops / seconds / peak,
        "fraction_of_conv_peak": flops / seconds / conv,
    }


#: What ``--part scaling`` varies, one axis at a time, from the cpu preset's network (64×128,
#: small encoder of width 32, batch 8, three tasks): (axis, value, overrides, input size).
SCALING: list[tuple[str, Any, list[str], tuple[int, int] | None]] = [
    *[("input", f"{h}x{2 * h}", [], (h, 2 * h)) for h in (32, 48, 64, 128, 256)],
    *[
        ("width", w, [f"model.small_width={w}", f"model.decoder_channels={2 * w}"], None)
        for w in (8, 16, 24, 32, 64)
    ],
    *[("batch", b, [f"optim.batch_size={b}"], None) for b in (2, 4, 8, 16, 32)],
    *[
        ("tasks", "+".join(t), [f"tasks=[{', '.join(t)}]", "weighting.kind=equal"], None)
        for t in (("depth",), ("semantic",), ("semantic", "depth"), SCENE_TASKS)
    ],
]


def scaling(peak: float, conv: float, repeats: int) -> list[dict[str, Any]]:
    """Seconds per step and GFLOP/s of the cpu preset's network along each axis of
    :data:`SCALING` (the decoder's channels follow the encoder's width, as in the presets)."""
    rows = []
    for axis, value, overrides, size in SCALING:
        row = step_speed("cpu/three-task", peak, conv, repeats, overrides, size)
        rows.append({"axis": axis, "value": value, **row})
    # a study trains runs side by side with one thread each: one thread against all
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        row = step_speed("cpu/three-task", peak, conv, repeats)
        rows.append({"axis": "threads", "value": n, **row})
    torch.set_num_threads(threads)
    return rows


def two_task_step(dataset: str, size: int, peak: float, conv: float, repeats: int) -> dict:
    """One Adam step of the two-task network (classification + reconstruction) at ``size``²,
    batch 64, equal weights: seconds and GFLOP/s."""
    from uncertainty_mtl.experiments.two_task.training import task_losses
    from uncertainty_mtl.models.autoencoder import ConvAutoencoderClassifier

    torch.manual_seed(0)
    model = ConvAutoencoderClassifier(size, num_classes=10, mean=0.0, std=1.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    images, labels = torch.rand(64, 1, size, size), torch.randint(0, 10, (64,))

    def step() -> None:
        losses = task_losses(model.outputs(model.features(images)), images, labels)
        optimiser.zero_grad(set_to_none=True)
        torch.stack(list(losses.values())).sum().backward()
        optimiser.step()

    step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    times = []
    for _ in range(max(repeats, 20)):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "network": f"two-task ({dataset})",
        "input": [size, size],
        "batch": 64,
        "step_s": seconds,
        "gflop_per_step": flops / 1e9,
        "gflop_per_s": flops / seconds / 1e9,
        "fraction_of_mm_peak": flops / seconds / peak,
        "fraction_of_conv_peak": flops / seconds / conv,
    }


def loop_overhead(repeats: int, steps: int) -> dict[str, Any]:
    """engine.train vs a plain loop, and uncertainty vs fixed weighting, on cpu/three-task."""
    from torch.utils.data import DataLoader

    from uncertainty_mtl.data.cityscapes import CityscapesScenes

    base = [
        "eval.select_split=null",
        f"optim.steps={steps}",
        "run.checkpoint_every=100000",
        "data.flip=false",
        "eval.max_frames=8",
    ]
    variants = {
        "engine_uncertainty": load_config("cpu/three-task", base),
        "engine_fixed": load_config(
            "cpu/three-task",
            [
                *base,
                "weighting.kind=fixed",
                "weighting.weights={semantic: 1.0, instance: 1.0, depth: 1.0}",
            ],
        ),
    }
    timings: dict[str, list[float]] = {k: [] for k in (*variants, "plain_uncertainty")}
    config = variants["engine_uncertainty"]
    frames = CityscapesScenes(
        config.data.root, "train", tasks=config.trained_tasks, cache_dir=config.data.cache_dir
    )
    for _ in range(repeats):
        for name, variant in variants.items():
            with tempfile.TemporaryDirectory() as out:
                result = train(variant, Path(out) / "run", progress=False)
            timings[name].append(result["training"]["seconds_this_session"] / steps)
        # The plain loop: same model, optimiser, batches; nothing else.
        torch.manual_seed(0)
        model, weighting = build_model(config), build_weighting(config)
        optimiser = torch.optim.SGD(
            parameter_groups(model, weighting, lr=0.02, weight_decay=1e-4),
            lr=0.02,
            momentum=0.9,
            nesterov=True,
        )
        loader = DataLoader(
            frames, batch_size=8, shuffle=True, drop_last=True, num_workers=config.data.workers
        )
        start, done = time.perf_counter(), 0
        while done < steps:
            for images, targets in loader:
                total = weighting(scene_losses(model(images), targets, model.tasks))
                optimiser.zero_grad(set_to_none=True)
                total.backward()
                optimiser.step()
                done += 1
                if done == steps:
                    break
        timings["plain_uncertainty"].append((time.perf_counter() - start) / steps)
    median = {k: statistics.median(v) for k, v in timings.items()}
    return {
        "config": "cpu/three-task",
        "steps_per_run": steps,
        "repeats": repeats,
        "seconds_per_step": median,
        "all": timings,
        "engine_over_plain": median["engine_uncertainty"] / median["plain_uncertainty"],
        "uncertainty_over_fixed": median["engine_uncertainty"] / median["engine_fixed"],
    }


def inference(repeats: int) -> list[dict[str, Any]]:
    rows = []
    cases = (
        ("cpu/three-task", []),
        ("paper/tiny-cityscapes/three-task", ["model.pretrained=false"]),
    )
    for name, overrides in cases:
        config = load_config(name, overrides)
        h, w = input_size(config)
        images = torch.randn(8 if config.model.backbone == "small" else 2, 3, h, w)
        nets = {"three-task": [build_model(config)]}
        nets["three single-task"] = [
            build_model(load_config(name, [*overrides, f"tasks=[{t}]"])) for t in config.tasks
        ]
        times = {}
        with torch.no_grad():
            for key, models in nets.items():
                for m in models:
                    m.eval()
                    m(images)
                samples = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    for m in models:
                        m(images)
                    samples.append(time.perf_counter() - start)
                times[key] = statistics.median(samples)
        rows.append(
            {
                "config": name,
                "input": [h, w],
                "batch": len(images),
                "seconds": times,
                "ratio": times["three-task"] / times["three single-task"],
            }
        )
    return rows


def finite_checks(names: list[str], repeats: int) -> list[dict[str, Any]]:
    from uncertainty_mtl.engine.loop import Loop

    rows = []
    for name in names:
        config = load_config(name, ["model.pretrained=false"])
        h, w = input_size(config)
        model, weighting = build_model(config), build_weighting(config)
        joint = torch.nn.ModuleDict({"model": model, "weighting": weighting})
        holder = type("Holder", (), {"trained_parameters": joint.parameters})()
        check = Loop._parameters_finite.__get__(holder)  # the method the loop calls
        check()
        times = []
        for _ in range(max(repeats, 20)):
            start = time.perf_counter()
            check()
            times.append(time.perf_counter() - start)
        step = step_speed(name, 1.0, 1.0, repeats)["step_s"]
        rows.append(
            {
                "config": name,
                "input": [h, w],
                "parameters": sum(p.numel() for p in joint.parameters()),
                "check_ms": statistics.median(times) * 1e3,
                "step_s": step,
                "check_over_step_percent": 100 * statistics.median(times) / step,
                "log_every": config.run.log_every,
                "overhead_percent": 100 * statistics.median(times) / step / config.run.log_every,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--part",
        choices=["steps", "scaling", "loop", "inference", "checks", "all"],
        default="all",
    )
    parser.add_argument("--configs", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-steps", type=int, default=150)
    args = parser.parse_args()
    out: dict[str, Any] = {
        "benchmark": "training",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if args.part in ("steps", "scaling", "all"):
        # the ceilings, measured in the same run as the steps they are compared with
        peak, conv = matmul_peak(), conv_peak()
        out["mm_peak_gflop_per_s"] = peak / 1e9
        out["conv_peak_gflop_per_s"] = conv / 1e9
    if args.part in ("steps", "all"):
        names = args.configs or [n for n in shipped_configs() if n != "smoke"]
        out["steps"] = [step_speed(n, peak, conv, args.repeats) for n in names]
    if args.part in ("scaling", "all"):
        out["scaling"] = scaling(peak, conv, args.repeats)
        out["two_task"] = [
            two_task_step(name, size, peak, conv, args.repeats)
            for name, size in (("digits", 8), ("fashion-mnist", 28))
        ]
    if args.part in ("loop", "all"):
        out["loop"] = loop_overhead(args.repeats, args.loop_steps)
    if args.part in ("inference", "all"):
        out["inference"] = inference(args.repeats)
    if args.part in ("checks", "all"):
        names = args.configs or [n for n in shipped_configs() if n.startswith("cpu/")]
        out["checks"] = finite_checks(names, args.repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
