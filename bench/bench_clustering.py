"""Instance clustering: time per image and AP per method. Prints JSON; run on demand.

    python bench/bench_clustering.py [--run runs/cpu-three-task] [--frames 3] [--skip-ap]

* time: ground-truth semantics and offsets of synthetic frames rendered at 128×256 and at
  1024×2048, with Gaussian noise on the offsets (σ = 1 px at 128×256, scaled with the width) to
  make vote clouds like a network's; seconds per image and votes per image, per method;
* AP: a trained run evaluated on the synthetic city's **validation** split with each method
  (the default method is chosen on this split, never on test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from uncertainty_mtl.data.labels import id_to_train_id
from uncertainty_mtl.data.synthetic import city_style, render_frame
from uncertainty_mtl.data.targets import instance_targets
from uncertainty_mtl.inference.clustering import METHODS, cluster_instances


def timing(frames: int, height: int, width: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(frames):
        frame = render_frame(
            city_style(0, "val", i), np.random.default_rng([9, i]), height, width, noise=False
        )
        offset, mask = instance_targets(frame.instance_ids)
        offset = offset + rng.normal(0, width / 256, offset.shape) * mask
        cases.append((id_to_train_id()[frame.label_ids], offset, int(mask.sum())))
    out: dict[str, Any] = {"size": [height, width], "votes_per_image": [c[2] for c in cases]}
    for method in METHODS:
        cluster_instances(*cases[0][:2], method=method)  # warm-up (imports)
        seconds = []
        for semantic, offset, _ in cases:
            start = time.perf_counter()
            cluster_instances(semantic, offset, method=method)
            seconds.append(time.perf_counter() - start)
        out[method] = statistics.median(seconds)
    return out


def ap_on_validation(run: str) -> dict[str, Any]:
    from uncertainty_mtl.engine import evaluate_checkpoint

    rows = {}
    for method in METHODS:
        start = time.perf_counter()
        result = evaluate_checkpoint(run, split="val", cluster_method=method, progress=False)
        metrics = result["metrics"]
        rows[method] = {
            "instance_ap": metrics["instance_ap"],
            "instance_ap50": metrics["instance_ap50"],
            "seconds": time.perf_counter() - start,
            "frames": result["frames"],
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="runs/cpu-three-task")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--skip-ap", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "benchmark": "instance_clustering",
        "time_per_image_s": [timing(args.frames, 128, 256), timing(args.frames, 1024, 2048)],
    }
    if not args.skip_ap:
        out["validation_ap"] = {"run": args.run, "split": "val", **ap_on_validation(args.run)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
