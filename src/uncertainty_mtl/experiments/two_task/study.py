"""The two-task study for the runner (:class:`TwoTaskStudy`), and the study as one command
(:func:`run_study`): its runs, the approx.-optimal choice on val, the summary over seeds, then
the report (``table.md`` and three figures)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uncertainty_mtl.config import split_weighting
from uncertainty_mtl.data.mnist_like import ImageSplits
from uncertainty_mtl.experiments.benchmark.selection import CANDIDATE_CRITERION, choose
from uncertainty_mtl.experiments.executors import Executor, Job, LocalExecutor
from uncertainty_mtl.experiments.runner import Run, Runner, loop_job
from uncertainty_mtl.experiments.two_task.claims import claims
from uncertainty_mtl.experiments.two_task.config import (
    REFERENCE,
    REFERENCE_APPROX_OPTIMAL,
    TASKS,
    StudyConfig,
    TwoTaskRun,
    config_dict,
    fixed_run,
    learned_run,
)
from uncertainty_mtl.experiments.two_task.report import (
    ROW_LABELS,
    plot_grid,
    plot_log_variances,
    plot_test_curves,
    table,
)
from uncertainty_mtl.experiments.two_task.training import RESULT_FILE, TwoTaskLoop, load_splits
from uncertainty_mtl.reporting.tables import summarise

#: The study's name: its outputs are ``two_task.json``, ``.md`` and ``.png``.
STUDY = "two_task"

__all__ = [
    "TwoTaskStudy",
    "grid_summaries",
    "run_study",
    "select_weight",
    "split_summaries",
    "summarise_study",
]


@dataclass
class TwoTaskStudy:
    """The two-task study's runs for the runner: each run's patch applied once to the study's
    settings."""

    config: StudyConfig
    device: str = "cpu"
    result_file: str = RESULT_FILE

    @property
    def smoke(self) -> bool:
        return self.config.max_train is not None  # cut splits: the smoke preset's

    def resolve(self, run: Run, *, parallel: bool = False) -> TwoTaskRun:
        """The run's config: the study's settings, then the run's patch (``weighting.<key>``
        for the method, as every study names it; the study's ``init_log_var`` and
        ``weighting_lr`` are the weighting's unless the patch sets them)."""
        study_only = ("seeds", "grid_seeds", "grid", "init_log_var", "weighting_lr")
        base = {k: v for k, v in asdict(self.config).items() if k not in study_only}
        study = {"init_log_var": self.config.init_log_var, "lr": self.config.weighting_lr}
        weighting, rest = split_weighting(run.patch, study)
        return TwoTaskRun(
            **{**base, **rest},
            weighting=weighting,
            seed=run.seed,
            device=self.device,
        )

    def settings(self) -> dict[str, Any]:
        return config_dict(self.config)

    def identity(self, config: TwoTaskRun) -> dict[str, Any]:
        return config.identity()

    def job(self, config: TwoTaskRun, run_dir: Path) -> Job:
        return Job(
            f"{run_dir.parent.name}/{run_dir.name}", loop_job, (TwoTaskLoop, config, run_dir)
        )

    def prepare(self, *, progress: bool = True) -> None:
        load_splits(self.config)


def run_study(
    config: StudyConfig,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    executor: Executor | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Trains every row for every seed (skipping finished runs) and writes the study's outputs.

    Writes into ``out``: ``two_task.json``, ``two_task.md``, ``two_task.png`` (the weight
    sweep), ``two_task-log_variances.png``, ``two_task-test_curves.png``, ``config.yaml`` and one
    directory per run under ``runs/<row>-<config hash>/seed<k>/``.

    Args:
        workers: runs trained side by side here (when no ``executor`` is given).
        executor: where the runs train (raises ``Submitted`` for a cluster).

    Returns:
        The content of ``two_task.json``.
    """
    start = time.perf_counter()
    splits = load_splits(config)  # bad data fails here, before anything is written
    with Runner(
        TwoTaskStudy(config, device), Path(out), executor or LocalExecutor(workers), progress
    ) as runner:
        return _run_study(config, splits, runner, start)


def _run_study(
    config: StudyConfig, splits: ImageSplits, runner: Runner[TwoTaskStudy], start: float
) -> dict[str, Any]:
    """:func:`run_study`'s work, in the directory ``runner`` holds."""
    out = runner.out  # claimed and locked: absent, empty or a study of ours
    seeds = range(config.seeds)
    runs = [
        *(
            fixed_run(w, s)
            for s in seeds
            for w in config.fixed_weights
            if s < config.sweep_seeds(w)
        ),
        *(learned_run(c, s) for s in seeds for c in ("likelihood", "paper")),
    ]
    done = runner.results(runs)
    results = {(run.name, run.seed): done[run] for run in runs}
    chosen, _ = select_weight(grid_summaries(config, results))
    if chosen is not None:  # the chosen point for the seeds the sweep did not train it with
        rest = [fixed_run(chosen, s) for s in seeds if (fixed_run(chosen).name, s) not in results]
        results.update({(run.name, run.seed): r for run, r in runner.results(rest).items()})
    summary = summarise_study(config, splits, results)

    def learned_dir(row: str, seed: int) -> Path:
        return runner.run_dir(learned_run(row.removeprefix("learned_"), seed))

    train_images = summary["split_sizes"]["train"]
    summary["claims"] = claims(config, summary["rows"], results, learned_dir, train_images)
    timing = runner.timing()
    summary["wall_time_s"] = time.perf_counter() - start
    summary["trained_runs"] = timing["runs_trained"]
    summary["training_time_s"] = timing["training_time_s"]
    plot_grid(runner.write_outputs(STUDY, summary, table(summary)), summary)
    plot_log_variances(out / f"{STUDY}-log_variances.png", config, runner)
    plot_test_curves(out / f"{STUDY}-test_curves.png", config, summary, results)
    return summary


def split_summaries(results: Sequence[Mapping[str, Any]], split: str) -> dict[str, Any]:
    """Each final metric of ``split`` over the runs' results (mean, std, values)."""
    finals = [r["final"][split] for r in results]
    return {m: summarise([f[m] for f in finals]) for m in finals[0]}


def _metric_summaries(
    results: Mapping[tuple[str, int], dict[str, Any]], run_id: str, seeds: int, split: str
) -> dict[str, Any]:
    """Over the first ``seeds`` seeds that ``results`` holds for ``run_id``."""
    found = [results[run_id, s] for s in range(seeds) if (run_id, s) in results]
    return split_summaries(found, split)


def grid_summaries(
    config: StudyConfig, results: Mapping[tuple[str, int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each sweep point's val and test metrics over the sweep's seeds: the first ``grid_seeds``
    for every point, the rows' points included, so that the choice compares like with like."""
    seeds = config.grid_seeds or config.seeds
    return [
        {
            "weights": run.patch["weighting.weights"],
            "run_id": run.name,
            "seeds": seeds,
            "val": _metric_summaries(results, run.name, seeds, "val"),
            "test": _metric_summaries(results, run.name, seeds, "test"),
        }
        for run in map(fixed_run, config.fixed_weights)
    ]


def select_weight(grid: Sequence[dict[str, Any]]) -> tuple[float | None, dict[str, float]]:
    """The grid's multi-task point (0 < w < 1) that :func:`~uncertainty_mtl.experiments.
    selection.choose` picks from the validation means over seeds, and every point's score."""
    points = {
        g["weights"]["classification"]: {m: v["mean"] for m, v in g["val"].items()}
        for g in grid
        if 0 < g["weights"]["classification"] < 1
    }
    if not points:
        return None, {}
    chosen, scores = choose(points, TASKS)
    return chosen, {f"{w:.2f}": score for w, score in scores.items()}


def summarise_study(
    config: StudyConfig,
    splits: ImageSplits,
    results: Mapping[tuple[str, int], dict[str, Any]],
) -> dict[str, Any]:
    seeds = config.seeds
    grid = grid_summaries(config, results)
    chosen, scores = select_weight(grid)
    row_runs = {
        "classification_only": fixed_run(1.0).name,
        "reconstruction_only": fixed_run(0.0).name,
        "unweighted": fixed_run(0.5).name,
        "learned_likelihood": learned_run("likelihood").name,
        "learned_paper": learned_run("paper").name,
    }
    if chosen is not None:
        row_runs["approx_optimal"] = fixed_run(chosen).name
    rows: dict[str, Any] = {}
    for row in ROW_LABELS:
        if row not in row_runs:
            continue
        run_id = row_runs[row]
        first = results[run_id, 0]
        entry: dict[str, Any] = {
            "label": ROW_LABELS[row],
            "run_id": run_id,
            "weights": first["weights"],
            "convention": first["convention"],
            "test": _metric_summaries(results, run_id, seeds, "test"),
            "val": _metric_summaries(results, run_id, seeds, "val"),
        }
        if first["log_variances"]:
            entry["final_log_variances"] = {
                t: summarise([results[run_id, s]["log_variances"][t] for s in range(seeds)])
                for t in TASKS
            }
            entry["final_effective_weights"] = {
                t: summarise([results[run_id, s]["effective_weights"][t] for s in range(seeds)])
                for t in TASKS
            }
        rows[row] = entry
    return {
        "study": "two-task",
        "dataset": config.dataset,
        "split_sizes": {s: len(getattr(splits, s)[1]) for s in ("train", "val", "test")},
        "image_size": splits.image_size,
        "seeds": list(range(seeds)),
        "config": config_dict(config),
        "rows": rows,
        "grid": grid,
        "approx_optimal": {
            "weights": None if chosen is None else fixed_run(chosen).patch["weighting.weights"],
            "criterion": "among the grid's multi-task points (0 < w < 1), with the validation "
            "means over "
            + ("seeds" if config.grid_seeds is None else f"the first {config.grid_seeds} seed(s)")
            + ": "
            + CANDIDATE_CRITERION,
            "scores": scores,
        },
        "reference": {
            "source": "Key (2019), AML reproduction report, Table 1 (Fashion-MNIST, test split)",
            "rows": REFERENCE,
            "approx_optimal_weights": REFERENCE_APPROX_OPTIMAL,
        },
    }
