"""What the reproduction report leaves open, chosen on the validation split: the batch size and
the number of epochs, from learning curves (:func:`learning_curves`).

The unweighted row (0.5, 0.5: both heads learn, neither is favoured) trains for ``horizon``
epochs at each candidate batch size, one seed, evaluated on val after every epoch. Every
(batch, epochs) pair is a candidate, scored by the study's own criterion
(:data:`~uncertainty_mtl.experiments.benchmark.selection.CANDIDATE_CRITERION`, both tasks' val
errors min-max normalised over all candidates, averaged). Among the candidates whose score is within
:data:`TOLERANCE` of the best, the cheapest in training images (epochs × training split) is
chosen, a smaller batch breaking ties, because the study trains dozens of runs at that setting.
The test split is never read.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from uncertainty_mtl.experiments.benchmark.selection import CANDIDATE_CRITERION, choose
from uncertainty_mtl.experiments.executors import Executor, LocalExecutor
from uncertainty_mtl.experiments.runner import Run, Runner
from uncertainty_mtl.experiments.two_task.config import TASKS, StudyConfig, fixed_run
from uncertainty_mtl.experiments.two_task.study import TwoTaskStudy
from uncertainty_mtl.experiments.two_task.training import load_splits

__all__ = [
    "BATCHES",
    "HORIZON",
    "SHORT_EPOCHS",
    "TOLERANCE",
    "choose_schedule",
    "learning_curves",
]

#: The candidate batch sizes (the report's code is silent; these bracket common choices).
BATCHES = (32, 64, 128)
#: Epochs of each curve.
HORIZON = 30
#: The short preset's cap on the epochs (the same rule among the candidates within it).
SHORT_EPOCHS = 10
#: A candidate within this much of the best score (on the criterion's 0..1 scale) counts as
#: equally good.
TOLERANCE = 0.02

CHOICE_RULE = (
    "every (batch, epochs) pair of the unweighted row's validation curves is scored by the "
    f"study's criterion ({CANDIDATE_CRITERION}); among those within {TOLERANCE} of the best "
    "score, the one that trains on the fewest images is chosen (then the smaller batch)"
)


def curve_run(batch: int, train_images: int) -> Run:
    """The unweighted row at ``batch``, evaluated after every epoch."""
    patch = {
        **fixed_run(0.5).patch,
        "batch_size": batch,
        "eval_every": math.ceil(train_images / batch),
    }
    return Run(f"curve-batch{batch}", patch, 0)


def choose_schedule(
    curves: dict[int, list[dict[str, Any]]],
    train_images: int,
    tolerance: float = TOLERANCE,
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """The (batch, epochs) that :data:`CHOICE_RULE` picks.

    Args:
        curves: batch -> the run's ``history`` (``step``, ``val/accuracy``,
            ``val/reconstruction_l1`` after every epoch; step 0 is skipped).
        train_images: images in the training split (converts steps to epochs).
        tolerance: see :data:`TOLERANCE`.
        max_epochs: only the candidates of at most this many epochs (the short preset's).

    Returns:
        ``batch_size``, ``epochs``, ``score`` and ``best`` (the best candidate and its score).
    """
    candidates: dict[tuple[int, int], dict[str, float]] = {}
    for batch, history in curves.items():
        per_epoch = math.ceil(train_images / batch)
        for row in history:
            epoch = row["step"] // per_epoch
            if row["step"] == 0 or row["step"] % per_epoch or epoch > (max_epochs or epoch):
                continue
            candidates[batch, epoch] = {
                "accuracy": row["val/accuracy"],
                "reconstruction_l1": row["val/reconstruction_l1"],
            }
    best, scores = choose(candidates, TASKS)
    good = [c for c, s in scores.items() if s <= scores[best] + tolerance]
    batch, epochs = min(good, key=lambda c: (c[1], c[0]))
    return {
        "batch_size": batch,
        "epochs": epochs,
        "score": scores[batch, epochs],
        "val": candidates[batch, epochs],
        "best": {
            "batch_size": best[0],
            "epochs": best[1],
            "score": scores[best],
            "val": candidates[best],
        },
    }


def learning_curves(
    config: StudyConfig,
    out: str | os.PathLike[str],
    *,
    batches: tuple[int, ...] = BATCHES,
    horizon: int = HORIZON,
    workers: int = 1,
    executor: Executor | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the curves (skipping finished ones), chooses the schedule and writes
    ``curves.json``, ``curves.md``, ``curves.png`` and ``config.yaml`` into ``out``.

    Returns:
        The content of ``curves.json``: the rule, the choice, each curve's val metrics per epoch.
    """
    start = time.perf_counter()
    curve_config = replace(config, epochs=horizon, seeds=1)
    train_images = len(load_splits(curve_config).train[1])
    runs = [curve_run(b, train_images) for b in batches]
    with Runner(
        TwoTaskStudy(curve_config, device),
        Path(out),
        executor or LocalExecutor(workers),
        progress,
    ) as runner:
        done = runner.results(runs)
        timing = runner.timing()
        curves = {run.patch["batch_size"]: done[run]["history"] for run in runs}
        choice = choose_schedule(curves, train_images)
        short = choose_schedule(curves, train_images, max_epochs=min(SHORT_EPOCHS, horizon))
        summary = {
            "study": "two-task learning curves",
            "dataset": config.dataset,
            "row": "unweighted (0.5, 0.5), seed 0, Adam at the preset's lr",
            "lr": config.lr,
            "horizon_epochs": horizon,
            "train_images": train_images,
            "rule": CHOICE_RULE,
            "chosen": choice,
            "chosen_short": {"max_epochs": min(SHORT_EPOCHS, horizon), **short},
            "curves": {
                str(b): [
                    {
                        "epoch": row["step"] // math.ceil(train_images / b),
                        "val/accuracy": row["val/accuracy"],
                        "val/reconstruction_l1": row["val/reconstruction_l1"],
                    }
                    for row in curves[b]
                ]
                for b in batches
            },
            "training_time_s": timing["training_time_s"],
            "wall_time_s": time.perf_counter() - start,
        }
        from uncertainty_mtl.experiments.two_task.report import plot_learning_curves

        figure = runner.write_outputs("curves", summary, _markdown(summary))
        plot_learning_curves(figure, summary)
    return summary


def _markdown(summary: Mapping[str, Any]) -> str:
    """The choice and its rule, and each curve's best validation (the figure has the curves)."""

    def point(c: Mapping[str, Any]) -> str:
        val = c["val"]
        return (
            f"batch {c['batch_size']} at {c['epochs']} epochs (val accuracy "
            f"{val['accuracy']:.2f} %, L1 {val['reconstruction_l1']:.4f})"
        )

    chosen, short = summary["chosen"], summary["chosen_short"]
    lines = [
        f"# Learning curves ({summary['dataset']}, {summary['row']})",
        "",
        f"Rule: {summary['rule']}.",
        "",
        f"- Chosen: {point(chosen)}; the best score: {point(chosen['best'])}.",
        f"- Within {short['max_epochs']} epochs: {point(short)}.",
        "",
        "| batch | epochs | best val accuracy (%) | best val L1 |",
        "|---|---|---|---|",
    ]
    for batch, rows in summary["curves"].items():
        accuracy = max(r["val/accuracy"] for r in rows)
        l1 = min(r["val/reconstruction_l1"] for r in rows)
        lines.append(f"| {batch} | {rows[-1]['epoch']} | {accuracy:.2f} | {l1:.4f} |")
    return "\n".join(lines) + "\n"
