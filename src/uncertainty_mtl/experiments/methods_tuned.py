"""The methods benchmark under the tuned protocol, on the two-task study (``umtl reproduce methods
--dataset digits|fashion-mnist --protocol tuned``).

Every row gets the same search (:mod:`~uncertainty_mtl.experiments.tuning`) on the validation
split (short runs with seed 0, full-length ones on the mean of seeds 0 and 1): the two single-task
references, ``equal``, the uncertainty weighting, the
approx.-optimal fixed weights and every other method. Then every row trains ``seeds`` seeds at its
chosen rate, reported on the test split, with Δm against the tuned single-task references. The
study's optimiser is Adam (the reproduction report's), nearly blind to a common scale of the
weights: the search is over the rate alone. The approx.-optimal row keeps the direction the study's
own weight sweep chose at the preset's rate, and then gets the same rate search: it is the only
row tuned twice (said in the table's note).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from uncertainty_mtl._io import write_json, write_text
from uncertainty_mtl.experiments import two_task
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
from uncertainty_mtl.experiments.runner import Run, Runner
from uncertainty_mtl.experiments.tuning import LrSearch, tune_lr
from uncertainty_mtl.experiments.two_task.cost import step_costs
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise
from uncertainty_mtl.tasks.registry import TASKS as SPECS

__all__ = [
    "SINGLES",
    "STEP_COST_HOW",
    "at_rate",
    "spearman_note",
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
    """Tunes every row of ``rows`` (name -> its run at seed 0; the single-task references as
    :data:`SINGLES` names), trains ``seeds`` seeds of each at its rate, and writes
    ``methods-tuned.json``, ``methods-tuned.md`` into the runner's directory."""
    tasks = two_task.TASKS
    trained: dict[Run, dict[str, Any]] = {}
    searches: dict[str, Any] = {}
    chosen: dict[str, float] = {}
    every = {**{n: two_task.fixed_run(w, 0) for n, w in SINGLES.items()}, **rows}
    for name, base in every.items():
        scored = [n.removesuffix("-only") for n in SINGLES if n == name] or list(tasks)

        def train(rates: Sequence[float], epochs: int, base: Run = base) -> dict[float, Any]:
            short = None if epochs == config.epochs else epochs
            seeded = [Run(base.name, base.patch, s) for s in search.seeds(epochs, config.epochs)]
            runs = {lr: [at_rate(b, lr, short) for b in seeded] for lr in rates}
            trained.update(runner.results([r for rs in runs.values() for r in rs]))
            return {lr: _mean_val([trained[r] for r in rs]) for lr, rs in runs.items()}

        chosen[name], searches[name] = tune_lr(
            config.lr, train, scored, steps=config.epochs, search=search
        )
    # the first seeds' runs are the search's full-length runs at the chosen rate: trained once
    finals = {
        name: [at_rate(Run(base.name, base.patch, s), chosen[name]) for s in range(seeds)]
        for name, base in every.items()
    }
    done = runner.results([r for runs in finals.values() for r in runs])
    singles = {n.removesuffix("-only"): finals[n] for n in SINGLES}
    references = seed_references(done, singles, tasks)
    single = {
        t: {SPECS[t].metric: math.fsum(r[t][SPECS[t].metric] for r in references) / seeds}
        for t in tasks
    }

    def delta_m(metrics: Mapping[str, float], base: Mapping[str, Any]) -> float:
        return task_delta_m(metrics, base, tasks)

    table_rows: dict[str, Any] = {}
    for name in rows:
        results = [done[r] for r in finals[name]]
        table_rows[name] = {
            "kind": "aggregator" if name in aggregators else "loss weighting",
            "lr": chosen[name],
            "metrics": two_task.split_summaries(results, "test"),
            "delta_m": summarise([delta_m(r["metrics"], single) for r in results]),
            "delta_m_all_pairs": all_pairs_delta_m(results, references, delta_m),
            **rows_diagnostics([runner.run_dir(r) for r in finals[name]], tasks),
            "runs": [str(runner.run_dir(r)) for r in finals[name]],
        }
    paired_rows(table_rows)
    for name, rank in mean_ranks(table_rows, tasks, lambda t: SPECS[t].metric).items():
        table_rows[name]["mean_rank"] = rank
    for name, cost in step_costs({n: runner.config(finals[n][0]) for n in rows}).items():
        table_rows[name].update(cost)
    summary: dict[str, Any] = {
        "experiment": "methods",
        "protocol": "tuned",
        "optimiser": "adam",
        "dataset": config.dataset,
        "report_split": "test",
        "selection_split": "val",
        "seeds": list(range(seeds)),
        "search": {
            "factors": list(search.factors),
            "eta": search.halving.eta,
            "rungs": search.halving.rungs,
            "extensions": search.extensions,
            "full_seeds": search.full_seeds,
            "base_lr": config.lr,
            "epochs": config.epochs,
        },
        "single_task": {
            n: {
                "lr": chosen[n],
                "metrics": two_task.split_summaries([done[r] for r in finals[n]], "test"),
            }
            for n in SINGLES
        },
        "rows": table_rows,
        "step_cost": {"how": STEP_COST_HOW},
        "weight_sum_spearman": weight_sum_spearman(table_rows),
        "searches": searches,
        **runner.timing(),
        "wall_time_s": time.perf_counter() - start,
    }
    write_json(runner.out / "methods-tuned.json", summary)
    write_text(runner.out / "methods-tuned.md", _markdown(summary))
    methods_figure(runner.out / "methods-tuned.png", summary, f"{config.dataset}, tuned rates")
    return summary


def _mean_val(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The mean over runs of each selection (val) metric."""
    keys = results[0]["final"]["val"]
    return {k: math.fsum(r["final"]["val"][k] for r in results) / len(results) for k in keys}


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


def _markdown(summary: Mapping[str, Any]) -> str:
    headers = [
        "method",
        "lr",
        "accuracy [%] ↑",
        "reconstruction L1 ↓",
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
                format_mean_std(m["accuracy"], 1),
                format_mean_std(m["reconstruction_l1"], 4),
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
    return "\n".join(
        [
            f"# Methods on the two-task study ({summary['dataset']}), tuned protocol",
            "",
            f"Every row, the single-task references included, chose its Adam learning rate on "
            f"the validation split from {len(s['factors'])} rates, factors "
            f"{', '.join(f'{f:g}' for f in s['factors'])} of {s['base_lr']:g}, by successive "
            f"halving ({s['rungs']} rungs, η = {s['eta']}; full-length runs compared on the mean "
            f"of {s['full_seeds']} seeds), extended by factor-2 steps past an "
            f"edge (at most {s['extensions']}); then trained {len(summary['seeds'])} seeds at "
            "that rate, reported on the test split (mean ± std). Single-task references: "
            f"classification at lr {single['classification-only']['lr']:g}, reconstruction at "
            f"{single['reconstruction-only']['lr']:g}. The approx.-optimal row keeps the "
            "direction the study's weight sweep chose at the preset's rate, then gets the same "
            "rate search (it alone is tuned twice). Paired columns: the mean of the per-seed "
            "differences of Δm against that row's run of the same seed, its 95% Student-t "
            "interval and the verdict (better or worse only where the interval excludes 0). "
            "Update norm: the shared gradient's norm over equal's on the same batch, averaged "
            "over the logged steps. Step cost: one training step on random batches, timed alone "
            "(1 thread, the methods in turns), over equal's.",
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
