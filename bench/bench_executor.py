"""What a batch of runs costs the local executor besides its training. Prints JSON; run on demand.

    python bench/bench_executor.py [--batches 6] [--runs 4] [--workers 2]

A study hands the executor its runs in batches (a search's rungs, then its finalists, then
each row's seeds). Each run here is a job that does a study's imports (torch, the two-task
study's modules) and no training, so each batch's seconds are the executor's overhead alone:
with the pool kept for the whole command (the executor as it is) and with a new pool per batch
(the executor as it was: ``close()`` after every batch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from uncertainty_mtl.experiments.executors import Job, LocalExecutor


def imports_only(index: int) -> dict[str, Any]:
    """A run's imports without its training."""
    import torch

    import uncertainty_mtl.experiments.two_task.training  # noqa: F401

    return {"index": index, "pid": os.getpid(), "threads": torch.get_num_threads()}


def batch_seconds(executor: LocalExecutor, runs: int, *, new_pool: bool) -> float:
    jobs = [Job(f"run{i}", imports_only, (i,)) for i in range(runs)]
    start = time.perf_counter()
    for _ in executor.execute(jobs, progress=False):
        pass
    seconds = time.perf_counter() - start
    if new_pool:
        executor.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    report: dict[str, Any] = {"batches": args.batches, "runs_per_batch": args.runs}
    for name, new_pool in (("pool_per_batch", True), ("pool_per_command", False)):
        with LocalExecutor(args.workers) as executor:
            times = [
                batch_seconds(executor, args.runs, new_pool=new_pool) for _ in range(args.batches)
            ]
        report[name] = {
            "first_batch_s": round(times[0], 3),
            "later_batch_median_s": round(statistics.median(times[1:]), 3),
            "total_s": round(sum(times), 3),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
