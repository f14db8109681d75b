"""The methods benchmark's statistics and diagnostics, for every benchmark alike (the scene's three
tasks, the two-task study): what a sentence that ranks two methods needs, and what tells a method's
direction from its step size.

* :func:`paired_rows`: each row's per-seed paired Δm difference against ``equal``, the uncertainty
  weighting and the tuned fixed weights (mean, 95% interval, probability of improvement);
* :func:`all_pairs_delta_m`: Δm with the single-task references' spread in it (every seed of the
  row against every seed's references);
* :func:`mean_ranks`: each row's rank per task (1 = best), averaged over the tasks;
* :func:`run_diagnostics`: from a run's ``metrics.jsonl``, its effective task weights (final and
  averaged over the logged steps) and the norm of its shared update over ``equal``'s on the same
  batch;
* :func:`table_agreement`: how two methods tables (two presets) agree on the rows they share.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from uncertainty_mtl.reporting.stats import delta_m as stats_delta_m
from uncertainty_mtl.reporting.stats import (
    format_interval,
    holm_family,
    mean_interval,
    paired_difference,
)
from uncertainty_mtl.reporting.tables import summarise
from uncertainty_mtl.tasks.registry import TASKS as SPECS

__all__ = [
    "BASELINES",
    "adjusted_verdict",
    "all_pairs_delta_m",
    "delta_m",
    "family",
    "mean_ranks",
    "methods_figure",
    "paired_cell",
    "paired_rows",
    "rows_diagnostics",
    "run_diagnostics",
    "seed_references",
    "table_agreement",
]

#: The rows every method is compared with, seed by seed.
BASELINES = ("equal", "uncertainty", "approx-optimal")


def delta_m(
    metrics: Mapping[str, float],
    single: Mapping[str, Mapping[str, float]],
    tasks: Sequence[str],
) -> float:
    """Δm % of a run's ``metrics`` against the single-task models' (``single``: task ->
    metrics), each task's metric and direction from its spec
    (:func:`~uncertainty_mtl.reporting.stats.delta_m`)."""
    return stats_delta_m(
        {t: metrics[SPECS[t].metric] for t in tasks},
        {t: single[t][SPECS[t].metric] for t in tasks},
        {t: SPECS[t].higher_is_better for t in tasks},
    )


def paired_rows(rows: Mapping[str, dict[str, Any]]) -> None:
    """Adds ``paired`` = ``{baseline: {"delta_m": paired_difference(...)}}`` to every row, for
    the :data:`BASELINES` present (not against itself); the rows' ``delta_m`` hold one value a
    seed, in the same seed order. Every comparison against one baseline is one family: each gets
    its Holm-adjusted ``p_holm`` and ``verdict_holm`` over the family."""
    for method, row in rows.items():
        row["paired"] = {
            base: {
                "delta_m": paired_difference(
                    row["delta_m"]["values"],
                    rows[base]["delta_m"]["values"],
                    higher_is_better=False,
                )
            }
            for base in BASELINES
            if base in rows and base != method
        }
    for base in BASELINES:
        family = [r["paired"][base]["delta_m"] for r in rows.values() if base in r["paired"]]
        holm_family(family, higher_is_better=False)


def paired_cell(row: Mapping[str, Any], base: str, *, verdict: bool = False) -> str:
    """``"-1.2 [-2.0, -0.4]"`` (and the verdict): a row's paired Δm difference against
    ``base`` with its 95% interval, for a table; ``"–"`` where it has none. The verdict is the
    Holm-adjusted one (:func:`~uncertainty_mtl.reporting.stats.holm_family`); where only the
    unadjusted test separates the rows it reads "suggestive"."""
    found = row.get("paired", {}).get(base)
    if found is None:
        return "–"
    d = found["delta_m"]
    text = f"{d['mean']:+.1f} {format_interval(d['ci95'])}"
    return f"{text} {adjusted_verdict(d)}" if verdict else text


def adjusted_verdict(comparison: Mapping[str, Any]) -> str:
    """What a table says of a comparison: Holm's verdict, ``"suggestive (better)"`` or
    ``"suggestive (worse)"`` where only the unadjusted interval separates, the unadjusted
    verdict for a table written before the adjustment."""
    adjusted = comparison.get("verdict_holm")
    if adjusted is None:
        return str(comparison["verdict"])
    if adjusted == "not separated" and comparison["verdict"] != "not separated":
        return f"suggestive ({comparison['verdict']})"
    return str(adjusted)


def seed_references(
    done: Mapping[Any, Mapping[str, Any]],
    singles: Mapping[str, Sequence[Any]],
    tasks: Sequence[str],
) -> list[dict[str, dict[str, float]]]:
    """Each seed's single-task references, ``{task: {metric: value}}``, from the results
    (``done``) of each task's single-task runs (``singles``, one a seed): for Δm with their
    spread."""
    seeds = len(next(iter(singles.values())))
    return [
        {
            t: {SPECS[t].metric: float(done[singles[t][s]]["metrics"][SPECS[t].metric])}
            for t in tasks
        }
        for s in range(seeds)
    ]


def all_pairs_delta_m(
    results: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Mapping[str, float]]],
    delta_m: Callable[[Mapping[str, float], Mapping[str, Mapping[str, float]]], float],
) -> dict[str, Any]:
    """Δm of every run of a row against every seed's single-task references (``references``:
    one ``{task: {metric: value}}`` a seed): its spread holds the references' spread too."""
    return summarise([delta_m(r["metrics"], ref) for r in results for ref in references])


def mean_ranks(
    rows: Mapping[str, dict[str, Any]], tasks: Sequence[str], metric_of: Callable[[str], str]
) -> dict[str, float]:
    """Each row's rank by its mean metric on each task (1 = best, ties share the mean of their
    ranks), averaged over ``tasks``."""
    ranks: dict[str, list[float]] = {m: [] for m in rows}
    for task in tasks:
        spec, name = SPECS[task], metric_of(task)
        values = {m: float(row["metrics"][name]["mean"]) for m, row in rows.items()}
        ordered = sorted(values.values(), reverse=spec.higher_is_better)
        for method, value in values.items():
            places = [i + 1 for i, v in enumerate(ordered) if v == value]
            ranks[method].append(sum(places) / len(places))
    return {m: sum(r) / len(r) for m, r in ranks.items()}


def run_diagnostics(run_dir: str | Path, tasks: Sequence[str]) -> dict[str, Any]:
    """From one run's ``metrics.jsonl``: ``weights_final`` and ``weights_mean`` (``{task: w}``
    at the last logged step and averaged over the logged steps; ``None`` where the run logged
    no weights) and ``update_norm_vs_equal`` (the mean over the steps that measured it;
    ``None`` where none did)."""
    path = Path(run_dir) / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    weighted = [r for r in records if all(f"weight/{t}" in r for t in tasks)]
    ratios = [r["update_norm_vs_equal"] for r in records if "update_norm_vs_equal" in r]
    out: dict[str, Any] = {"weights_final": None, "weights_mean": None}
    if weighted:
        out["weights_final"] = {t: float(weighted[-1][f"weight/{t}"]) for t in tasks}
        out["weights_mean"] = {
            t: math.fsum(r[f"weight/{t}"] for r in weighted) / len(weighted) for t in tasks
        }
    out["update_norm_vs_equal"] = math.fsum(ratios) / len(ratios) if ratios else None
    return out


def rows_diagnostics(run_dirs: Sequence[str | Path], tasks: Sequence[str]) -> dict[str, Any]:
    """A row's ``effective_weights`` (``{"final": {task: w}, "mean": {task: w}}``, each the
    mean over the row's runs; ``None`` where a run logged no weights) and its
    ``update_norm_vs_equal`` (the mean over its runs; ``None`` where a run did not measure it,
    as runs trained before the measurement existed)."""
    found = [run_diagnostics(d, tasks) for d in run_dirs]
    weights = None
    if found and all(f["weights_final"] is not None for f in found):
        weights = {
            kind: {t: math.fsum(f[f"weights_{kind}"][t] for f in found) / len(found) for t in tasks}
            for kind in ("final", "mean")
        }
    ratios = [f["update_norm_vs_equal"] for f in found]
    ratio = None if not ratios or None in ratios else math.fsum(ratios) / len(ratios)
    return {"effective_weights": weights, "update_norm_vs_equal": ratio}


def family(method: str, kind: str) -> str:
    """The figures' family of a row: the uncertainty weighting, a loss weighting or an
    aggregator."""
    if method == "uncertainty":
        return "the uncertainty weighting"
    return "gradient aggregator" if kind == "aggregator" else "loss weighting"


def methods_figure(path: Any, summary: Mapping[str, Any], title: str) -> None:
    """A methods table's figure: each row's Δm with the 95% t-interval over seeds beside its
    cost of a step over ``equal``'s (measured alone where the table measured it, else the runs'
    own seconds); rows without a cost are left out."""
    from uncertainty_mtl.reporting.plots import cost_scatter

    rows = [
        (
            name,
            family(name, row["kind"]),
            row["cost_vs_equal"],
            d["mean"],
            mean_interval(d["values"]),
        )
        for name, row in summary["rows"].items()
        if row["cost_vs_equal"] is not None
        for d in [row["delta_m"]]
    ]
    measured = "step_cost" in summary
    cost_scatter(
        path,
        rows,
        title=f"{title}, {len(summary['seeds'])} seed(s)",
        xlabel="cost of a training step, × equal's (measured alone, 1 thread)"
        if measured
        else "seconds per step relative to equal (the runs' own)",
        errors="error bars: 95% t-interval over seeds",
    )


def table_agreement(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """How two methods tables (their JSON: two presets, or two protocols) agree on the rows they
    share: Spearman's correlation of the rows' mean Δm (with its p-value), and each row's
    verdict against ``equal`` (the paired 95% interval over its seeds) in both tables."""
    from scipy.stats import spearmanr

    names = [n for n in first["rows"] if n in second["rows"]]
    if len(names) < 3 or "equal" not in names:
        raise ValueError(f"table_agreement needs 3 shared rows and equal among them, got {names}")

    def against_equal(table: Mapping[str, Any], name: str) -> str:
        rows = table["rows"]
        found = paired_difference(
            rows[name]["delta_m"]["values"],
            rows["equal"]["delta_m"]["values"],
            higher_is_better=False,
        )
        return str(found["verdict"])

    found = spearmanr(
        [first["rows"][n]["delta_m"]["mean"] for n in names],
        [second["rows"][n]["delta_m"]["mean"] for n in names],
    )
    verdicts = {n: [against_equal(first, n), against_equal(second, n)] for n in names}
    del verdicts["equal"]
    return {
        "rows": names,
        "spearman": float(found.statistic),
        "p_value": float(found.pvalue),
        "verdicts_vs_equal": verdicts,
        "same_verdict": sum(a == b for a, b in verdicts.values()),
    }
