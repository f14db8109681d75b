"""The reproduction report's claims, tested on the study's runs with paired statistics.

* **learned beats tuned**: each learned row against the approximately optimal fixed weights;
* **MTL beats single-task**: each multi-task row's accuracy against classification alone, its
  reconstruction error against reconstruction alone;
* **the uncertainties converge within the first epoch** (the paper's "100s of iterations"; the
  report saw tens of epochs): for each learned run and task, the first epoch after which the
  learned ``s`` stays within :data:`CONVERGED` of its final value.

Every comparison is on the test split, per seed (rows of one seed share initialisation and batch
order), with the verdict of :func:`~uncertainty_mtl.reporting.stats.paired_difference`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from uncertainty_mtl._io import read_jsonl
from uncertainty_mtl.experiments.two_task.config import TASKS, StudyConfig
from uncertainty_mtl.reporting.stats import paired_difference

__all__ = ["CONVERGED", "METRICS", "claims", "combined", "converged_epoch"]

#: Each task's test metric and whether higher is better.
METRICS = {"classification": ("accuracy", True), "reconstruction": ("reconstruction_l1", False)}
#: ``s`` within this of its final value counts as converged (σ² within about 10%).
CONVERGED = 0.1
_LEARNED = ("learned_likelihood", "learned_paper")


def combined(verdicts: Mapping[str, str]) -> str:
    """One verdict from the per-task ones: ``"better"`` when some task is better and none worse,
    ``"worse"`` the other way round, ``"mixed"`` when both happen, else ``"not separated"``."""
    found = set(verdicts.values())
    if "better" in found:
        return "mixed" if "worse" in found else "better"
    return "worse" if "worse" in found else "not separated"


def _compare(
    per_seed: Callable[[str, str], list[float]], row: str, against: str, tasks: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {"row": row, "against": against, "tasks": {}}
    for task in tasks:
        metric, higher = METRICS[task]
        out["tasks"][task] = {
            "metric": metric,
            **paired_difference(
                per_seed(row, metric), per_seed(against, metric), higher_is_better=higher
            ),
        }
    out["verdict"] = combined({t: v["verdict"] for t, v in out["tasks"].items()})
    return out


def converged_epoch(records: list[dict[str, Any]], task: str, steps_per_epoch: int) -> float:
    """The epoch (fractional) of the first logged step from which ``log_var/<task>`` stays within
    :data:`CONVERGED` of its last logged value."""
    values = [r[f"log_var/{task}"] for r in records]
    first = len(values) - 1
    while first > 0 and abs(values[first - 1] - values[-1]) <= CONVERGED:
        first -= 1
    return float(records[first]["step"]) / steps_per_epoch


def claims(
    config: StudyConfig,
    rows: Mapping[str, Mapping[str, Any]],
    results: Mapping[tuple[str, int], Mapping[str, Any]],
    run_dir: Callable[[str, int], Path],
    train_images: int,
) -> dict[str, Any]:
    """The three claims' comparisons and measurements.

    Args:
        rows: the summary's rows (``run_id`` of each).
        results: ``(run_id, seed)`` -> the run's result.
        run_dir: ``(row, seed)`` -> the run's directory (its ``metrics.jsonl``).
        train_images: images in the training split (steps -> epochs).
    """
    seeds = range(config.seeds)

    def per_seed(row: str, metric: str) -> list[float]:
        return [results[rows[row]["run_id"], s]["final"]["test"][metric] for s in seeds]

    learned = [r for r in _LEARNED if r in rows]
    out: dict[str, Any] = {"learned_beats_tuned": [], "mtl_beats_single_task": []}
    if "approx_optimal" in rows:
        out["learned_beats_tuned"] = [
            _compare(per_seed, r, "approx_optimal", TASKS) for r in learned
        ]
    singles = {"classification": "classification_only", "reconstruction": "reconstruction_only"}
    for row in ("unweighted", "approx_optimal", *learned):
        if row not in rows:
            continue
        per_task = {
            task: _compare(per_seed, row, single, (task,))["tasks"][task]
            for task, single in singles.items()
        }
        out["mtl_beats_single_task"].append(
            {
                "row": row,
                "against": "the single-task row of each task",
                "tasks": per_task,
                "verdict": combined({t: v["verdict"] for t, v in per_task.items()}),
            }
        )
    steps_per_epoch = math.ceil(train_images / config.batch_size)
    convergence: dict[str, Any] = {}
    for row in learned:
        epochs = {t: [] for t in TASKS}  # type: dict[str, list[float]]
        for s in seeds:
            records = read_jsonl(run_dir(row, s) / "metrics.jsonl")
            for task in TASKS:
                epochs[task].append(converged_epoch(records, task, steps_per_epoch))
        convergence[row] = {
            t: {"epochs": e, "max": max(e), "within_first_epoch": max(e) <= 1.0}
            for t, e in epochs.items()
        }
    out["uncertainties_converge_in_first_epoch"] = {
        "criterion": f"s stays within {CONVERGED} of its final value from that epoch on",
        "rows": convergence,
    }
    return out
