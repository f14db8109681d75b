"""The methods benchmark under the tuned protocol (``umtl reproduce methods --protocol tuned``),
for every benchmark alike (:class:`Benchmark`: the scene's three tasks under SGD or Adam, the
two-task study).

Every row gets the same search (:mod:`~uncertainty_mtl.experiments.benchmark.tuning`) on the
selection split (short runs with seed 0, full-length ones on the mean of seeds 0 and 1): the
single-task references, ``equal``, the uncertainty weighting, the approx.-optimal fixed weights and
every other method. Then every row trains ``seeds`` seeds at its chosen rate, reported on the report
split, with Δm against the tuned single-task references. Under SGD a common scale of the weights is
a step size, so the rate search is also a search of the fixed weights' scale; Adam is nearly blind
to that scale. The approx.-optimal row keeps the weights the benchmark's own sweep chose at the
preset's rate, and then gets the same rate search: it is the only row tuned twice (said in the
table's note)."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from uncertainty_mtl.experiments import two_task
from uncertainty_mtl.experiments.benchmark.methods_stats import (
    all_pairs_delta_m,
    mean_ranks,
    methods_figure,
    paired_cell,
    paired_rows,
    rows_diagnostics,
    seed_references,
)
from uncertainty_mtl.experiments.benchmark.methods_stats import delta_m as task_delta_m
from uncertainty_mtl.experiments.benchmark.tuning import LrSearch, tune_lr
from uncertainty_mtl.experiments.runner import Run, Runner
from uncertainty_mtl.experiments.two_task.cost import step_costs
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise
from uncertainty_mtl.tasks.registry import TASKS as SPECS

#: How the tables name the optimisers.
OPTIMISER_NAMES = {"sgd": "SGD", "adam": "Adam"}
#: A benchmark's metric column: header, metric key, decimals.
Column = tuple[str, str, int]

__all__ = [
    "OPTIMISER_NAMES",
    "SINGLES",
    "STEP_COST_HOW",
    "Benchmark",
    "at_rate",
    "spearman_note",
    "tuned_markdown",
    "tuned_table",
    "two_task_tuned",
    "weight_sum_spearman",
]

#: How the tables' step cost is measured (written into their JSON).
STEP_COST_HOW = (
    "median seconds of one training step on random batches, alone, 1 thread, the methods in "
    "turns (experiments.two_task.cost.step_costs)"
)

#: The single-task references: their run at seed 0 and the task it trains.
SINGLES = {"classification-only": 1.0, "reconstruction-only": 0.0}


def at_rate(run: Run, lr: float, epochs: int | None = None) -> Run:
    """``run`` at learning rate ``lr`` (and ``epochs``, a first rung's shorter run)."""
    name = f"{run.name}-lr{lr:g}" + ("" if epochs is None else f"-e{epochs}")
    patch = {"lr": lr} if epochs is None else {"lr": lr, "epochs": epochs}
    return run.with_patch(name, **patch)


@dataclass(frozen=True)
class Benchmark:
    """What the tuned protocol needs of a benchmark.

    Attributes:
        title: the table's heading, after "Methods, tuned protocol: ".
        optimiser: ``"sgd"`` or ``"adam"`` (written into the JSON).
        tasks: the tasks of the multi-task rows.
        base_lr: the grid's centre.
        length: a full run's steps (or epochs).
        singles: reference name -> (its run at seed 0, the task it trains).
        at_rate: ``at_rate(run, lr, length)``: the run at that rate, ``length`` shorter than a
            full run (a first rung's selection run) or ``None``.
        selection_metrics: the selection split's metrics of a finished run (its result).
        summaries: the report split's metrics over seeds' results (mean, std, values).
        costs: each row's step cost, given its run at seed 0 (name -> run).
        columns: the table's metric columns.
        extra: keys of the JSON's top level that name the benchmark (``dataset``, ``preset``).
        reference_note: the table's sentence on what the approx.-optimal row's weights are.
        cost_how: how ``costs`` measures a step (written into the JSON).
        splits: the selection split and the report split.
    """

    title: str
    optimiser: str
    tasks: tuple[str, ...]
    base_lr: float
    length: int
    singles: Mapping[str, tuple[Run, str]]
    at_rate: Callable[[Run, float, int | None], Run]
    selection_metrics: Callable[[Run, Mapping[str, Any]], Mapping[str, Any]]
    summaries: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]
    costs: Callable[[Mapping[str, Run]], dict[str, dict[str, float]]]
    columns: tuple[Column, ...]
    extra: Mapping[str, Any]
    reference_note: str
    cost_how: str = STEP_COST_HOW
    splits: tuple[str, str] = ("val", "test")


def tuned_table(
    bench: Benchmark,
    runner: Runner[Any],
    rows: Mapping[str, Run],
    *,
    seeds: int,
    search: LrSearch,
    start: float,
    aggregators: Sequence[str],
    name: str = "methods-tuned",
) -> dict[str, Any]:
    """Tunes every row of ``rows`` (name -> its run at seed 0) and the benchmark's single-task
    references, trains ``seeds`` seeds of each at its rate, and writes ``<name>.json``,
    ``<name>.md`` and ``<name>.png`` into the runner's directory."""
    tasks = bench.tasks
    trained: dict[Run, dict[str, Any]] = {}
    searches: dict[str, Any] = {}
    chosen: dict[str, float] = {}
    every = {**{n: run for n, (run, _) in bench.singles.items()}, **rows}
    for row, base in every.items():
        scored = [bench.singles[row][1]] if row in bench.singles else list(tasks)

        def train(rates: Sequence[float], length: int, base: Run = base) -> dict[float, Any]:
            short = None if length == bench.length else length
            seeded = [Run(base.name, base.patch, s) for s in search.seeds(length, bench.length)]
            runs = {lr: [bench.at_rate(b, lr, short) for b in seeded] for lr in rates}
            trained.update(runner.results([r for rs in runs.values() for r in rs]))
            return {
                lr: _mean([bench.selection_metrics(r, trained[r]) for r in rs])
                for lr, rs in runs.items()
            }

        chosen[row], searches[row] = tune_lr(
            bench.base_lr, train, scored, steps=bench.length, search=search
        )
    # the first seeds' runs are the search's full-length runs at the chosen rate: trained once
    finals = {
        row: [bench.at_rate(Run(base.name, base.patch, s), chosen[row], None) for s in range(seeds)]
        for row, base in every.items()
    }
    done = runner.results([r for runs in finals.values() for r in runs])
    singles = {task: finals[n] for n, (_, task) in bench.singles.items()}
    references = seed_references(done, singles, tasks)
    single = {
        t: {SPECS[t].metric: math.fsum(r[t][SPECS[t].metric] for r in references) / seeds}
        for t in tasks
    }

    delta_m = functools.partial(task_delta_m, tasks=tasks)

    table_rows: dict[str, Any] = {}
    for row in rows:
        results = [done[r] for r in finals[row]]
        table_rows[row] = {
            "kind": "aggregator" if row in aggregators else "loss weighting",
            "lr": chosen[row],
            "metrics": bench.summaries(results),
            "delta_m": summarise([delta_m(r["metrics"], single) for r in results]),
            "delta_m_all_pairs": all_pairs_delta_m(results, references, delta_m),
            **rows_diagnostics([runner.run_dir(r) for r in finals[row]], tasks),
            "runs": [str(runner.run_dir(r)) for r in finals[row]],
        }
    paired_rows(table_rows)
    for row, rank in mean_ranks(table_rows, tasks, lambda t: SPECS[t].metric).items():
        table_rows[row]["mean_rank"] = rank
    for row, cost in bench.costs({n: finals[n][0] for n in rows}).items():
        table_rows[row].update(cost)
    summary: dict[str, Any] = {
        "experiment": "methods",
        "protocol": "tuned",
        "optimiser": bench.optimiser,
        **bench.extra,
        "title": bench.title,
        "report_split": bench.splits[1],
        "selection_split": bench.splits[0],
        "seeds": list(range(seeds)),
        "search": {
            "factors": list(search.factors),
            "eta": search.halving.eta,
            "rungs": search.halving.rungs,
            "extensions": search.extensions,
            "full_seeds": search.full_seeds,
            "base_lr": bench.base_lr,
            "length": bench.length,
        },
        "single_task": {
            n: {"lr": chosen[n], "metrics": bench.summaries([done[r] for r in finals[n]])}
            for n in bench.singles
        },
        "rows": table_rows,
        "columns": [list(c) for c in bench.columns],
        "reference_note": bench.reference_note,
        "step_cost": {"how": bench.cost_how},
        "weight_sum_spearman": weight_sum_spearman(table_rows),
        "searches": searches,
        **runner.timing(),
        "wall_time_s": time.perf_counter() - start,
    }
    figure = runner.write_outputs(name, summary, tuned_markdown(summary))
    methods_figure(figure, summary, f"{bench.title}, tuned rates")
    return summary


def two_task_tuned(
    config: two_task.StudyConfig,
    runner: Runner[two_task.TwoTaskStudy],
    rows: Mapping[str, Run],
    *,
    seeds: int,
    search: LrSearch,
    start: float,
    aggregators: Sequence[str],
) -> dict[str, Any]:
    """:func:`tuned_table` on the two-task study (Adam, epochs; the references are its
    single-task rows): ``methods-tuned.json``, ``.md``, ``.png``."""
    tasks = two_task.TASKS
    bench = Benchmark(
        title=f"two tasks, {config.dataset}",
        optimiser="adam",
        tasks=tuple(tasks),
        base_lr=config.lr,
        length=config.epochs,
        singles={
            n: (two_task.fixed_run(w, 0), n.removesuffix("-only")) for n, w in SINGLES.items()
        },
        at_rate=at_rate,
        selection_metrics=lambda _run, result: result["final"]["val"],
        summaries=lambda results: two_task.split_summaries(results, "test"),
        costs=lambda runs: step_costs({n: runner.config(r) for n, r in runs.items()}),
        columns=(
            ("accuracy [%] ↑", "accuracy", 1),
            ("reconstruction L1 ↓", "reconstruction_l1", 4),
        ),
        extra={"dataset": config.dataset},
        reference_note="the direction the study's weight sweep chose at the preset's rate "
        "(Adam is nearly blind to the weights' sum)",
    )
    return tuned_table(
        bench, runner, rows, seeds=seeds, search=search, start=start, aggregators=aggregators
    )


def _mean(metrics: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The mean over runs of each numeric selection metric."""
    keys = [k for k, v in metrics[0].items() if isinstance(v, int | float)]
    return {k: math.fsum(float(m[k]) for m in metrics) / len(metrics) for k in keys}


def weight_sum_spearman(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Spearman's correlation, over the loss-weighting rows that log their weights, between the
    sum of a row's final weights (mean over seeds) and its Δm: how much a table ranks step sizes
    (under SGD the weights' sum is one)."""
    from scipy.stats import spearmanr

    pairs = [
        (sum(row["effective_weights"]["final"].values()), row["delta_m"]["mean"])
        for row in rows.values()
        if row["kind"] == "loss weighting" and (row.get("effective_weights") or {}).get("final")
    ]
    if len(pairs) < 3:
        return None
    rho = spearmanr([w for w, _ in pairs], [d for _, d in pairs]).statistic
    return {"rho": float(rho), "rows": len(pairs)}


def tuned_markdown(summary: Mapping[str, Any]) -> str:
    """A tuned table's markdown, from its JSON."""
    columns = [tuple(c) for c in summary["columns"]]
    headers = [
        "method",
        "lr",
        *(c[0] for c in columns),
        "Δm [%] ↓",
        "Δm − equal, paired [95% CI]",
        "Δm − uncertainty",
        "Δm − approx.-optimal",
        "mean rank",
        "update norm / equal's",
        "step cost (× equal)",
    ]
    lines = []
    for method, row in summary["rows"].items():
        m, ratio = row["metrics"], row["update_norm_vs_equal"]
        lines.append(
            [
                method,
                f"{row['lr']:g}",
                *(format_mean_std(m.get(key), digits) for _, key, digits in columns),
                format_mean_std(row["delta_m"], 1),
                paired_cell(row, "equal", verdict=True),
                paired_cell(row, "uncertainty", verdict=True),
                paired_cell(row, "approx-optimal", verdict=True),
                f"{row['mean_rank']:.1f}",
                "–" if ratio is None else f"{ratio:.2f}",
                f"{row['cost_vs_equal']:.2f}×",
            ]
        )
    s, single = summary["search"], summary["single_task"]
    references = ", ".join(f"{n} at lr {r['lr']:g}" for n, r in single.items())
    optimiser = OPTIMISER_NAMES[summary["optimiser"]]
    return "\n".join(
        [
            f"# Methods, tuned protocol: {summary['title']}",
            "",
            f"Every row, the single-task references included, chose its {optimiser} learning "
            f"rate on the {summary['selection_split']} split from {len(s['factors'])} rates, "
            f"factors {', '.join(f'{f:g}' for f in s['factors'])} of {s['base_lr']:g}, by "
            f"successive halving ({s['rungs']} rungs, η = {s['eta']}; full-length runs "
            f"compared on the mean of {s['full_seeds']} seeds), extended by factor-2 steps past "
            f"an edge (at most {s['extensions']}); then trained {len(summary['seeds'])} seeds "
            f"at that rate, reported on the {summary['report_split']} split (mean ± std). "
            f"Single-task references: {references}. The approx.-optimal row keeps "
            f"{summary['reference_note']}, then gets the same rate search (it alone is tuned "
            "twice). Paired columns: the mean of the per-seed differences of Δm against that "
            "row's run of the same seed, its 95% Student-t interval and the verdict: better or "
            "worse only where the paired t-test's p, Holm-adjusted over the column's rows, is "
            "below 0.05; suggestive where only the unadjusted interval excludes 0. Update norm: "
            "the shared gradient's norm over equal's on the same batch, averaged over the logged "
            "steps. Step cost: one training step on random batches, timed alone (1 thread, the "
            "methods in turns), over equal's.",
            "",
            markdown_table(headers, lines),
            "",
            spearman_note(summary.get("weight_sum_spearman")),
        ]
    )


def spearman_note(found: Mapping[str, Any] | None) -> str:
    """The tables' sentence on :func:`weight_sum_spearman`'s result."""
    if found is None:
        return "Too few loss weightings logged their weights for a correlation with Δm."
    return (
        f"Spearman's correlation between a loss weighting's final weights' sum and its Δm, over "
        f"{found['rows']} rows: {found['rho']:+.2f}."
    )
