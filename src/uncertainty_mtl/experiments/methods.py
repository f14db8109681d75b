"""The methods benchmark (SPEC §8): every loss weighting and gradient aggregator trains the
3-task scene network on Table 1's protocol (same preset, steps, seeds, selection and report
splits), beside the uncertainty weighting and the approximately optimal fixed weights of Table 1
(the tuned baseline, chosen with their overall scale). Runs are shared with Table 1 (the
single-task models, the uncertainty weighting, the approx.-optimal row) and with the units
experiment's protocol (depth labels ×100).

Per method: each task's metric and instance AP (mean ± std over seeds), Δm % against the
single-task models (Maninis et al. 2019; lower is better), seconds per training step relative to
``equal``, peak memory, and for every loss weighting the same metrics with depth labels ×100.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from uncertainty_mtl._io import write_json, write_text
from uncertainty_mtl.experiments import table1
from uncertainty_mtl.experiments.runner import Run, Runner, training_seconds
from uncertainty_mtl.experiments.scene import SceneStudy, cell, mean_metrics
from uncertainty_mtl.experiments.units import SCALE, in_units
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise
from uncertainty_mtl.tasks.registry import SCENE_TASKS as TASKS
from uncertainty_mtl.tasks.registry import TASKS as SPECS
from uncertainty_mtl.weighting.aggregators import AGGREGATORS

__all__ = ["LOSS_WEIGHTINGS", "METHODS", "delta_m", "reproduce_methods"]

#: Loss weightings (a weighted sum of the losses), then torchjd's gradient aggregators.
LOSS_WEIGHTINGS = ("equal", "uncertainty", "gls", "rlw", "imtl-l", "dwa", "gradnorm")
METHODS = (*LOSS_WEIGHTINGS, "approx-optimal", *AGGREGATORS)


def method_run(method: str, seed: int, chosen: tuple[float, float, float] | None = None) -> Run:
    """A method's 3-task run; the uncertainty weighting and the approx.-optimal weights are
    Table 1's rows (the same runs)."""
    if method == "uncertainty":
        return table1.row_run("uw-three", seed)
    if method == "approx-optimal":
        return table1.row_run("approx-optimal", seed, chosen)
    return Run(f"method-{method}", {"tasks": list(TASKS), "weighting.kind": method}, seed)


def delta_m(metrics: Mapping[str, float], single: Mapping[str, Mapping[str, float]]) -> float:
    """Δm % = (1/T)·Σ_t (−1)^{l_t}·(M_t − M_t^single)/M_t^single·100, ``l_t = 1`` where higher
    is better: the mean relative loss against the single-task models (lower is better; 0 is as
    good as them on average)."""
    terms = []
    for task in TASKS:
        spec = SPECS[task]
        value, base = float(metrics[spec.metric]), float(single[task][spec.metric])
        sign = -1.0 if spec.higher_is_better else 1.0
        terms.append(sign * (value - base) / base * 100.0)
    return sum(terms) / len(terms)


def _per_step(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    seconds = [training_seconds(r) / r["training"]["steps"] for r in results]
    memory = [r["training"].get("peak_memory_mb") for r in results]
    return {
        "seconds_per_step": summarise(seconds),
        "peak_memory_mb": summarise([m for m in memory if m is not None]) if all(memory) else None,
        "peak_memory_kind": results[0]["training"].get("peak_memory_kind"),
    }


def reproduce_methods(runner: Runner[SceneStudy], *, seeds: int = 1) -> dict[str, Any]:
    """Trains what is missing; writes ``methods.md``, ``methods.json`` and ``methods.png``."""
    chosen, _ = table1.approx_optimal(runner)
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
    rows: dict[str, Any] = {}
    for method in METHODS:
        results = [done[r] for r in runs[method]]
        row: dict[str, Any] = {
            "kind": "aggregator" if method in AGGREGATORS else "loss weighting",
            "metrics": mean_metrics(results),
            "delta_m": summarise([delta_m(r["metrics"], single) for r in results]),
            **_per_step(results),
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
    equal = rows["equal"]["seconds_per_step"]["mean"]
    for row in rows.values():
        row["cost_vs_equal"] = row["seconds_per_step"]["mean"] / equal
    summary: dict[str, Any] = {
        "experiment": "methods",
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
    _plot(runner.out / "methods.png", summary)
    return summary


def _markdown(summary: Mapping[str, Any]) -> str:
    headers = [
        "method",
        "IoU [%] ↑",
        "instance err. [px] ↓",
        "inv. depth err. [px] ↓",
        "instance AP [%] ↑",
        "Δm [%] ↓",
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
                f"{row['seconds_per_step']['mean']:.3f} ({row['cost_vs_equal']:.2f}×)",
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
    kind = next(iter(summary["rows"].values()))["peak_memory_kind"]
    memory_note = (
        "peak memory is the CUDA allocator's"
        if kind == "cuda_allocated"
        else "peak memory is the training process's peak resident set during the run (it "
        "includes the interpreter and the memory-mapped data cache, the same for every method)"
    )
    return "\n".join(
        [
            f"# Methods ({summary['preset']} preset): 3 tasks, one protocol",
            "",
            f"Reported split: {summary['report_split']}; mean ± std over "
            f"{len(summary['seeds'])} seed(s). Δm against the single-task models of Table 1 "
            "(lower is better). Seconds per step from each run's training time (runs trained "
            f"side by side share the CPU: compare within one table); {memory_note}. The last "
            "column repeats each loss weighting with the depth labels ×100 (metrics in pixels); "
            "aggregators are not repeated.",
            "",
            markdown_table(headers, lines),
        ]
    )


def _plot(path: Any, summary: Mapping[str, Any]) -> None:
    from uncertainty_mtl.reporting.plots import new_figure, save_figure

    fig, (ax,) = new_figure(1, width=6.5, height=4.5)
    for method, row in summary["rows"].items():
        colour = "tab:orange" if row["kind"] == "aggregator" else "tab:blue"
        if method == "uncertainty":
            colour = "tab:red"
        x, y = row["cost_vs_equal"], row["delta_m"]["mean"]
        ax.errorbar(x, y, yerr=row["delta_m"]["std"], fmt="o", color=colour, capsize=3)
        ax.annotate(method, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("seconds per step relative to equal")
    ax.set_ylabel("Δm [%] against single-task models (lower is better)")
    ax.set_title(f"{summary['preset']} preset, {len(summary['seeds'])} seed(s)")
    save_figure(fig, path)
