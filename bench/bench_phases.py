"""Where a study's seconds go, by phase. Prints JSON; run on demand.

    python bench/bench_phases.py STUDY_DIR [--startup] [--city]

* reads every finished run of a study directory (``<out>/runs/*/seed*/results.json``) and sums
  each run's ``training.phase_seconds`` (data generation, setup, steps, waiting for data,
  logging, validation, checkpoint writes, final evaluation and within it clustering and the
  official AP), by kind of run: Table 1's search (runs named ``grid-…``) and the rest;
* ``--startup``: the seconds of a process's start-up: ``umtl --version``, and importing the
  engine (what every worker of a study pays once);
* ``--city``: the seconds of generating the cpu preset's synthetic city (64×128) and building
  its caches, in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def study_phases(out: Path) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"runs": 0, "steps": 0, "seconds": defaultdict(float)}
    )
    for path in sorted(out.glob("runs/*/seed*/results.json")):
        result = json.loads(path.read_text())
        training = result.get("training", {})
        phases = training.get("phase_seconds")
        if phases is None:
            continue  # a run of a revision before phases were recorded
        kind = "search" if path.parent.parent.name.startswith("grid-") else "rows"
        entry = kinds[kind]
        entry["runs"] += 1
        entry["steps"] += training["steps"]
        for name, seconds in phases.items():
            entry["seconds"][name] += seconds
    summary = {}
    for kind, entry in kinds.items():
        seconds = dict(entry["seconds"])
        # the outer phases: nested ones (clustering, AP in the final evaluation) are not added
        outer = sum(v for k, v in seconds.items() if k not in ("clustering", "instance_ap"))
        summary[kind] = {
            "runs": entry["runs"],
            "steps": entry["steps"],
            "seconds": seconds,
            "total_s": outer,
            "percent": {k: 100 * v / outer for k, v in seconds.items()},
            "seconds_per_step": seconds.get("steps", 0.0) / max(entry["steps"], 1),
        }
    return summary


def startup(repeats: int = 5) -> dict[str, float]:
    commands = {
        "umtl --version": [sys.executable, "-m", "uncertainty_mtl", "--version"],
        "import uncertainty_mtl.engine": [sys.executable, "-c", "import uncertainty_mtl.engine"],
        "python (nothing imported)": [sys.executable, "-c", "pass"],
    }
    out = {}
    for name, command in commands.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    return out


def city() -> dict[str, float]:
    from uncertainty_mtl.config import load_config
    from uncertainty_mtl.data.prepare import ensure_scene_data, scene_frames

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            "cpu/three-task",
            [f"data.root={tmp}/city", "data.synthetic=true", f"data.cache_dir={tmp}/cache"],
        )
        start = time.perf_counter()
        ensure_scene_data(config.data, progress=False)
        generated = time.perf_counter() - start
        start = time.perf_counter()
        for split in ("train", "val", "test"):
            scene_frames(config.data, config.tasks, split, train=False, progress=False)
        cached = time.perf_counter() - start
    return {"generate_s": generated, "cache_s": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("study", type=Path, nargs="?", help="a study's output directory")
    parser.add_argument("--startup", action="store_true")
    parser.add_argument("--city", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"benchmark": "phases"}
    if args.study:
        out["study"] = str(args.study)
        out["phases"] = study_phases(args.study)
    if args.startup:
        out["startup_s"] = startup()
    if args.city:
        out["city"] = city()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
