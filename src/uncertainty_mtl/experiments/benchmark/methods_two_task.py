"""The methods benchmark on the two-task problem (classification + reconstruction, digits or
Fashion-MNIST): every method beside the two-task study's own rows, at the study's rate or under
the tuned protocol (``umtl reproduce methods --dataset digits|fashion-mnist``)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments import two_task
from uncertainty_mtl.experiments.benchmark.methods import (
    EVERY_AGGREGATOR,
    EVERY_METHOD,
    PAIRED_NOTE,
    PROTOCOLS,
    compare_rows,
    memory_sentence,
    per_step_costs,
)
from uncertainty_mtl.experiments.benchmark.methods_stats import (
    all_pairs_delta_m,
    methods_figure,
    paired_cell,
    rows_diagnostics,
    seed_references,
)
from uncertainty_mtl.experiments.benchmark.methods_stats import delta_m as task_delta_m
from uncertainty_mtl.experiments.benchmark.methods_tuned import (
    STEP_COST_HOW,
    spearman_note,
    two_task_tuned,
    weight_sum_spearman,
)
from uncertainty_mtl.experiments.benchmark.tuning import LrSearch
from uncertainty_mtl.experiments.executors import Executor
from uncertainty_mtl.experiments.runner import Run, Runner
from uncertainty_mtl.experiments.two_task.cost import step_costs
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise
from uncertainty_mtl.tasks.registry import TASKS as SPECS

__all__ = ["reproduce_two_task_methods", "two_task_markdown"]


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

    With ``protocol="tuned"``, every row (the single-task references included) chooses its learning
    rate by ``search`` (default :class:`~uncertainty_mtl.experiments.benchmark.tuning.LrSearch`) on
    val before its ``config.seeds`` seeds: ``methods-tuned.json`` and ``methods-tuned.md``
    (:mod:`~uncertainty_mtl.experiments.benchmark.methods_tuned`)."""
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

    two_task_delta_m = functools.partial(task_delta_m, tasks=tasks)

    rows: dict[str, Any] = {}
    for method in methods:
        results = [done[r] for r in runs[method]]
        row: dict[str, Any] = {
            "kind": "aggregator" if method in EVERY_AGGREGATOR else "loss weighting",
            "lr": config.lr,
            "metrics": two_task.split_summaries(results, "test"),
            "delta_m": summarise([two_task_delta_m(r["metrics"], single) for r in results]),
            "delta_m_all_pairs": all_pairs_delta_m(results, references, two_task_delta_m),
            **per_step_costs(results),
            **rows_diagnostics([runner.run_dir(r) for r in runs[method]], tasks),
            "runs": [str(runner.run_dir(r)) for r in runs[method]],
        }
        if method == "approx-optimal":
            row["weights"] = weights
        rows[method] = row
    for method, cost in step_costs({m: runner.config(runs[m][0]) for m in methods}).items():
        rows[method].update(cost)
    compare_rows(rows, tasks)
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
    figure = runner.write_outputs("methods", summary, two_task_markdown(summary))
    methods_figure(figure, summary, f"two tasks, {config.dataset}")
    return summary


def two_task_markdown(summary: Mapping[str, Any]) -> str:
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
    memory_note = memory_sentence(next(iter(summary["rows"].values()))["peak_memory_kind"])
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
            f"{PAIRED_NOTE} "
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
