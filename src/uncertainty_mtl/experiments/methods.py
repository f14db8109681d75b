"""The methods benchmark: every loss weighting and gradient aggregator trains the
3-task scene network on Table 1's protocol (same preset, steps, seeds, selection and report
splits), beside the uncertainty weighting and the approximately optimal fixed weights of Table 1
(the tuned baseline, chosen with their overall scale). Runs are shared with Table 1 (the
single-task models, the uncertainty weighting, the approx.-optimal row) and with the units
experiment's protocol (depth labels ×100).

Per method: each task's metric and instance AP (mean ± std over seeds), Δm % against the
single-task models (Maninis et al. 2019; lower is better), seconds per training step relative to
``equal``, peak memory, and for every loss weighting the same metrics with depth labels ×100.

:func:`reproduce_two_task_methods` does the same on the two-task study of the reproduction report
(classification + reconstruction on digits or Fashion-MNIST), beside that study's own rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uncertainty_mtl._io import write_json, write_text
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments import table1, two_task
from uncertainty_mtl.experiments.executors import Executor
from uncertainty_mtl.experiments.methods_stats import (
    all_pairs_delta_m,
    mean_ranks,
    methods_figure,
    paired_cell,
    paired_rows,
    rows_diagnostics,
    seed_references,
)
from uncertainty_mtl.experiments.methods_stats import delta_m as task_delta_m
from uncertainty_mtl.experiments.methods_tuned import (
    STEP_COST_HOW,
    spearman_note,
    two_task_tuned,
    weight_sum_spearman,
)
from uncertainty_mtl.experiments.runner import Run, Runner, training_seconds
from uncertainty_mtl.experiments.scene import SceneStudy, cell, mean_metrics
from uncertainty_mtl.experiments.tuning import LrSearch
from uncertainty_mtl.experiments.two_task.cost import step_costs
from uncertainty_mtl.experiments.units import SCALE, in_units
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise
from uncertainty_mtl.tasks.registry import SCENE_TASKS as TASKS
from uncertainty_mtl.tasks.registry import TASKS as SPECS
from uncertainty_mtl.weighting.registry import AGGREGATOR, LOSS_WEIGHTING, benchmarked

__all__ = [
    "EVERY_METHOD",
    "LOSS_WEIGHTINGS",
    "METHODS",
    "PROTOCOLS",
    "delta_m",
    "reproduce_methods",
    "reproduce_two_task_methods",
]

#: ``fixed-lr``: every row at the preset's learning rate (the paper's way); ``tuned``: every row
#: chooses its own on the selection split first.
PROTOCOLS = ("fixed-lr", "tuned")
#: The rows, from the registry of methods: its loss weightings (``equal`` first), the tuned fixed
#: weights, its gradient aggregators.
LOSS_WEIGHTINGS = benchmarked(LOSS_WEIGHTING)
AGGREGATORS = benchmarked(AGGREGATOR)
METHODS = (*LOSS_WEIGHTINGS, "approx-optimal", *AGGREGATORS)
#: Every loss weighting and gradient aggregator of the registry: the rows of the two-task
#: tables, both protocols; the city's single-rate table keeps :data:`METHODS`, the rows its
#: committed results hold, until it is regenerated.
EVERY_AGGREGATOR = benchmarked(AGGREGATOR, every=True)
EVERY_METHOD = (*benchmarked(LOSS_WEIGHTING, every=True), "approx-optimal", *EVERY_AGGREGATOR)


def method_run(method: str, seed: int, chosen: tuple[float, float, float] | None = None) -> Run:
    """A method's 3-task run; the uncertainty weighting and the approx.-optimal weights are
    Table 1's rows (the same runs)."""
    if method == "uncertainty":
        return table1.row_run("uw-three", seed)
    if method == "approx-optimal":
        return table1.row_run("approx-optimal", seed, chosen)
    return Run(f"method-{method}", {"tasks": list(TASKS), "weighting.kind": method}, seed)


def delta_m(
    metrics: Mapping[str, float],
    single: Mapping[str, Mapping[str, float]],
    tasks: Sequence[str] = TASKS,
) -> float:
    """Δm % against the single-task models (:func:`methods_stats.delta_m`; the scene's three
    tasks by default)."""
    return task_delta_m(metrics, single, tasks)


def _per_step(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds per step and peak memory over seeds (memory ``None`` where a run did not record
    it), from the runs' ``training``."""
    memory = [r["training"].get("peak_memory_mb") for r in results]
    return {
        "seconds_per_step": summarise(
            [training_seconds(r) / r["training"]["steps"] for r in results]
        ),
        "peak_memory_mb": None
        if None in memory
        else summarise([float(m) for m in memory if m is not None]),
        "peak_memory_kind": results[0]["training"].get("peak_memory_kind"),
    }


def _relative_costs(rows: Mapping[str, dict[str, Any]]) -> None:
    """Each row's seconds per step over ``equal``'s (``None`` where either is missing)."""
    equal = rows["equal"]["seconds_per_step"]
    for row in rows.values():
        mine = row["seconds_per_step"]
        row["cost_vs_equal"] = (
            None if mine is None or equal is None else mine["mean"] / equal["mean"]
        )


def _compare(rows: dict[str, dict[str, Any]], tasks: Sequence[str]) -> None:
    """The paired Δm differences against the baselines, and each row's mean rank over tasks."""
    paired_rows(rows)
    for method, rank in mean_ranks(rows, tasks, lambda t: SPECS[t].metric).items():
        rows[method]["mean_rank"] = rank


_PAIRED_NOTE = (
    "Every row at the preset's learning rate (the fixed-lr protocol: it ranks step sizes as "
    "much as methods). Δm − equal: the mean of the per-seed differences of Δm against equal's "
    "run of the same seed, with its 95% Student-t interval (a row is better or worse than equal "
    "only where the interval excludes 0). Mean rank: each task's rank among the rows (1 = best), "
    "averaged over the tasks."
)


def _cost_cell(row: Mapping[str, Any]) -> str:
    if row["cost_vs_equal"] is None:
        return "–"
    return f"{row['seconds_per_step']['mean']:.3f} ({row['cost_vs_equal']:.2f}×)"


def _memory_note(kind: str | None) -> str:
    if kind == "cuda_allocated":
        return "peak memory is the CUDA allocator's"
    return (
        "peak memory is the training process's peak resident set during the run (it includes "
        "the interpreter and the data, the same for every method)"
    )


def reproduce_methods(runner: Runner[SceneStudy], *, seeds: int = 1) -> dict[str, Any]:
    """Trains what is missing; writes ``methods.md``, ``methods.json`` and ``methods.png``."""
    chosen, _, _ = table1.approx_optimal(runner)
    singles = {t: [table1.row_run(f"{t}-only", s) for s in range(seeds)] for t in TASKS}
    runs = {m: [method_run(m, s, chosen) for s in range(seeds)] for m in METHODS}
    scaled = {m: [in_units(r) for r in runs[m]] for m in LOSS_WEIGHTINGS}
    done = runner.results(
        [
            *(r for rs in singles.values() for r in rs),
            *(r for rs in runs.values() for r in rs),
            *(r for rs in scaled.values() for r in rs),
        ]
    )
    single_means = {t: mean_metrics([done[r] for r in singles[t]]) for t in TASKS}
    single = {t: {SPECS[t].metric: single_means[t][SPECS[t].metric]["mean"]} for t in TASKS}
    references = seed_references(done, singles, TASKS)
    rows: dict[str, Any] = {}
    for method in METHODS:
        results = [done[r] for r in runs[method]]
        row: dict[str, Any] = {
            "kind": "aggregator" if method in AGGREGATORS else "loss weighting",
            "lr": runner.study.resolve(runs[method][0]).optim.lr,
            "metrics": mean_metrics(results),
            "delta_m": summarise([delta_m(r["metrics"], single) for r in results]),
            "delta_m_all_pairs": all_pairs_delta_m(results, references, delta_m),
            **_per_step(results),
            **rows_diagnostics([runner.run_dir(r) for r in runs[method]], TASKS),
            "runs": [str(runner.run_dir(r)) for r in runs[method]],
        }
        if method == "approx-optimal":
            row["weights"] = dict(zip(TASKS, chosen, strict=True))
        if method in scaled:
            units = [done[r] for r in scaled[method]]
            row["depth_x100"] = {
                "metrics": mean_metrics(units),
                "delta_m": summarise([delta_m(r["metrics"], single) for r in units]),
            }
        rows[method] = row
    _relative_costs(rows)
    _compare(rows, TASKS)
    summary: dict[str, Any] = {
        "experiment": "methods",
        "protocol": "fixed-lr",
        "optimiser": runner.study.resolve(runs["equal"][0]).optim.optimizer,
        "preset": runner.study.preset,
        "report_split": runner.study.spec.report_split,
        "seeds": list(range(seeds)),
        "single_task": single_means,
        "rows": rows,
        "units_factor": SCALE,
        **runner.timing(),
    }
    write_json(runner.out / "methods.json", summary)
    write_text(runner.out / "methods.md", _markdown(summary))
    methods_figure(runner.out / "methods.png", summary, f"{summary['preset']} preset")
    return summary


def _two_task_run(method: str, seed: int, chosen: float | None) -> Run:
    """A method's run on the two-task study; the uncertainty weighting and the approx.-optimal
    weights are the study's own rows (the same runs)."""
    if method == "uncertainty":
        return two_task.learned_run("likelihood", seed)
    if method == "approx-optimal":
        assert chosen is not None
        return two_task.fixed_run(chosen, seed)
    return two_task.method_run(method, seed)


def reproduce_two_task_methods(
    config: two_task.StudyConfig,
    out: str | os.PathLike[str],
    *,
    executor: Executor,
    device: str = "cpu",
    progress: bool = True,
    protocol: str = "fixed-lr",
    search: LrSearch | None = None,
) -> dict[str, Any]:
    """The methods on the two-task study (classification + reconstruction): first the study
    itself (:func:`~uncertainty_mtl.experiments.two_task.run_study`, in ``out``: its single-task
    rows, its approx.-optimal weight chosen on val and its learned row are the baselines), then
    every other method for ``config.seeds`` seeds; writes ``methods.md``, ``methods.json`` and
    ``methods.png`` into ``out``. Reported on the test split.

    With ``protocol="tuned"``, every row (the single-task references included) chooses its
    learning rate by ``search`` (default :class:`~uncertainty_mtl.experiments.tuning.LrSearch`)
    on val before its ``config.seeds`` seeds: ``methods-tuned.json`` and ``methods-tuned.md``
    (:mod:`~uncertainty_mtl.experiments.methods_tuned`)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    start = time.perf_counter()
    two_task.load_splits(config)  # bad data fails here, before anything is written
    with Runner(
        two_task.TwoTaskStudy(config, device), Path(out), executor, progress
    ) as runner:  # locked before the study's runner takes the same lock again
        study = two_task.run_study(config, out, executor=executor, device=device, progress=progress)
        if protocol == "fixed-lr":
            return _two_task_methods(config, study, runner, start)
        weights = study["approx_optimal"]["weights"]
        chosen = None if weights is None else float(weights["classification"])
        rows = {
            m: _two_task_run(m, 0, chosen)
            for m in EVERY_METHOD
            if m != "approx-optimal" or chosen is not None
        }
        return two_task_tuned(
            config,
            runner,
            rows,
            seeds=config.seeds,
            search=search or LrSearch(),
            start=start,
            aggregators=EVERY_AGGREGATOR,
        )


def _two_task_methods(
    config: two_task.StudyConfig,
    study: dict[str, Any],
    runner: Runner[two_task.TwoTaskStudy],
    start: float,
) -> dict[str, Any]:
    tasks = two_task.TASKS
    seeds = range(config.seeds)
    weights = study["approx_optimal"]["weights"]
    chosen = None if weights is None else float(weights["classification"])
    methods = [m for m in EVERY_METHOD if m != "approx-optimal" or chosen is not None]
    singles = {
        "classification": [two_task.fixed_run(1.0, s) for s in seeds],
        "reconstruction": [two_task.fixed_run(0.0, s) for s in seeds],
    }
    runs = {m: [_two_task_run(m, s, chosen) for s in seeds] for m in methods}
    done = runner.results(
        [*(r for rs in singles.values() for r in rs), *(r for rs in runs.values() for r in rs)]
    )

    single_means = {
        t: two_task.split_summaries([done[r] for r in singles[t]], "test") for t in tasks
    }
    single = {t: {SPECS[t].metric: single_means[t][SPECS[t].metric]["mean"]} for t in tasks}
    references = seed_references(done, singles, tasks)

    def two_task_delta_m(metrics: Mapping[str, float], base: Mapping[str, Any]) -> float:
        return delta_m(metrics, base, tasks)

    rows: dict[str, Any] = {}
    for method in methods:
        results = [done[r] for r in runs[method]]
        row: dict[str, Any] = {
            "kind": "aggregator" if method in EVERY_AGGREGATOR else "loss weighting",
            "lr": config.lr,
            "metrics": two_task.split_summaries(results, "test"),
            "delta_m": summarise([delta_m(r["metrics"], single, tasks) for r in results]),
            "delta_m_all_pairs": all_pairs_delta_m(results, references, two_task_delta_m),
            **_per_step(results),
            **rows_diagnostics([runner.run_dir(r) for r in runs[method]], tasks),
            "runs": [str(runner.run_dir(r)) for r in runs[method]],
        }
        if method == "approx-optimal":
            row["weights"] = weights
        rows[method] = row
    for method, cost in step_costs({m: runner.config(runs[m][0]) for m in methods}).items():
        rows[method].update(cost)
    _compare(rows, tasks)
    summary: dict[str, Any] = {
        "experiment": "methods",
        "protocol": "fixed-lr",
        "optimiser": "adam",
        "dataset": config.dataset,
        "report_split": "test",
        "seeds": list(seeds),
        "single_task": single_means,
        "rows": rows,
        "step_cost": {"how": STEP_COST_HOW},
        "weight_sum_spearman": weight_sum_spearman(rows),
        **runner.timing(),
        "wall_time_s": time.perf_counter() - start,  # the study's own rows included
    }
    out = runner.out
    write_json(out / "methods.json", summary)
    write_text(out / "methods.md", _two_task_markdown(summary))
    methods_figure(out / "methods.png", summary, f"two tasks, {config.dataset}")
    return summary


def _markdown(summary: Mapping[str, Any]) -> str:
    headers = [
        "method",
        "IoU [%] ↑",
        "instance err. [px] ↓",
        "inv. depth err. [px] ↓",
        "instance AP [%] ↑",
        "Δm [%] ↓",
        "Δm − equal, paired [95% CI]",
        "mean rank",
        "s / step (× equal)",
        "peak memory [MB]",
        "depth ×100: IoU / depth err. / Δm",
    ]
    lines = []
    for method, row in summary["rows"].items():
        m = row["metrics"]
        units = row.get("depth_x100")
        memory = row["peak_memory_mb"]
        lines.append(
            [
                method,
                cell(m, "miou", 1),
                cell(m, "instance_mean_error_px", 2),
                cell(m, "depth_mean_error_px", 3),
                cell(m, "instance_ap", 1),
                format_mean_std(row["delta_m"], 1),
                paired_cell(row, "equal"),
                f"{row['mean_rank']:.1f}",
                _cost_cell(row),
                "–" if memory is None else f"{memory['mean']:.0f}",
                "–"
                if units is None
                else " / ".join(
                    [
                        cell(units["metrics"], "miou", 1),
                        cell(units["metrics"], "depth_mean_error_px", 3),
                        format_mean_std(units["delta_m"], 1),
                    ]
                ),
            ]
        )
    memory_note = _memory_note(next(iter(summary["rows"].values()))["peak_memory_kind"])
    return "\n".join(
        [
            f"# Methods ({summary['preset']} preset): 3 tasks, one protocol",
            "",
            f"Reported split: {summary['report_split']}; mean ± std over "
            f"{len(summary['seeds'])} seed(s). Δm against the single-task models of Table 1 "
            f"(lower is better). {_PAIRED_NOTE} Seconds per step: each run's training time "
            "over its steps, which compares methods only where their runs trained under the "
            "same load (runs trained in other invocations, beside other work or on another "
            "machine are not "
            "comparable; `bench/bench_methods.py` measures the cost of a step alone); "
            f"{memory_note}. The last "
            "column repeats each loss weighting with the depth labels ×100 (metrics in pixels); "
            "aggregators are not repeated.",
            "",
            markdown_table(headers, lines),
        ]
    )


def _two_task_markdown(summary: Mapping[str, Any]) -> str:
    headers = [
        "method",
        "accuracy [%] ↑",
        "reconstruction L1 ↓",
        "Δm [%] ↓",
        "Δm − equal, paired [95% CI]",
        "Δm − uncertainty",
        "mean rank",
        "final weights (class., recon.)",
        "step cost (× equal)",
        "peak memory [MB]",
    ]
    lines = []
    for method, row in summary["rows"].items():
        m, memory = row["metrics"], row["peak_memory_mb"]
        final = (row.get("effective_weights") or {}).get("final")
        label = method
        if method == "approx-optimal":
            label += " ({:g}, {:g})".format(*row["weights"].values())
        lines.append(
            [
                label,
                format_mean_std(m["accuracy"], 1),
                format_mean_std(m["reconstruction_l1"], 4),
                format_mean_std(row["delta_m"], 1),
                paired_cell(row, "equal", verdict=True),
                paired_cell(row, "uncertainty", verdict=True),
                f"{row['mean_rank']:.1f}",
                "–" if final is None else ", ".join(f"{w:.3g}" for w in final.values()),
                f"{row['cost_vs_equal']:.2f}×",
                "–" if memory is None else f"{memory['mean']:.0f}",
            ]
        )
    memory_note = _memory_note(next(iter(summary["rows"].values()))["peak_memory_kind"])
    single = summary["single_task"]
    return "\n".join(
        [
            f"# Methods on the two-task study ({summary['dataset']}): classification + "
            "reconstruction",
            "",
            f"Test split; mean ± std over {len(summary['seeds'])} seed(s). Δm against the "
            "single-task models (accuracy "
            f"{single['classification']['accuracy']['mean']:.1f} %, reconstruction L1 "
            f"{single['reconstruction']['reconstruction_l1']['mean']:.4f}; lower Δm is better). "
            f"{_PAIRED_NOTE} "
            "The approx.-optimal weights are the study's grid point chosen on the validation "
            "split (Adam is nearly blind to the weights' overall scale, so the grid is not "
            "repeated at other sums), the uncertainty row is its learned row (likelihood "
            "convention). Final weights: the effective weights at the last logged step, mean "
            "over seeds. Step cost: one training step on random batches, timed alone (1 "
            f"thread, the methods in turns), over equal's; {memory_note}. There is no "
            "units test here: the reconstruction target is an image in [0, 1].",
            "",
            markdown_table(headers, lines),
            "",
            spearman_note(summary.get("weight_sum_spearman")),
        ]
    )
