"""What a QM9 training step costs at T = 11 for every weighting method, and for SchNet on the
CPU. Prints JSON; run on demand.

    python bench/bench_qm9.py [--steps 60] [--threads 1] [--schnet-steps 5]

Each method trains the study's step (the descriptor MLP, batch 128, Adam, 11 standardised
targets) for ``--steps`` steps on the first molecules of the real training split (the installed
``qm9pack``; ``pip install 'uncertainty-mtl[qm9]'``), through the study's own ``train_run``, which
times its training loop apart from data loading and evaluation. ``schnet`` is PyG's SchNet at its
default size (``pip install 'uncertainty-mtl[gnn]'``) with ``equal`` weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from uncertainty_mtl.data.qm9 import qm9pack_dir
from uncertainty_mtl.experiments import qm9
from uncertainty_mtl.weighting.registry import METHODS


def seconds_per_step(run: qm9.QM9Run) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = qm9.train_run(run, Path(tmp) / "run")
    return float(result["training"]["seconds_per_step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--schnet-steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if qm9pack_dir() is None:
        print(json.dumps({"skipped": "QM9's files: pip install 'uncertainty-mtl[qm9]'"}))
        return
    config = qm9.PRESETS["cpu"]
    base = qm9.QM9Study(config).resolve(qm9.method_run("equal", "standardised"))
    short: dict[str, Any] = {"epochs": 1, "max_eval": 256}
    runs = {
        m: replace(base, **short, method=m, max_train=args.steps * base.batch_size)
        for m in METHODS
        if m != "fixed"  # needs its weights
    }
    qm9.load_arrays(None)  # the cache, before anything is timed
    step = {m: seconds_per_step(r) for m, r in runs.items()}
    out: dict[str, object] = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "batch": base.batch_size,
        "tasks": len(base.tasks),
        "mlp_ms_per_step": {m: round(1000 * s, 2) for m, s in step.items()},
        "mlp_cost_vs_equal": {m: round(s / step["equal"], 2) for m, s in step.items()},
    }
    try:
        import torch_geometric  # noqa: F401
    except ImportError:
        out["schnet"] = "not installed: pip install 'uncertainty-mtl[gnn]'"
    else:
        schnet = replace(
            base, **short, model="schnet", max_train=args.schnet_steps * base.batch_size
        )
        s = seconds_per_step(schnet)
        out["schnet_ms_per_step"] = round(1000 * s, 1)
        out["schnet_epoch_minutes"] = round(s * 110_000 / base.batch_size / 60, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
