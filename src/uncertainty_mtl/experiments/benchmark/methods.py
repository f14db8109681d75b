"""The methods benchmark: every loss weighting and gradient aggregator trains the
3-task scene network on Table 1's protocol (same preset, steps, seeds, selection and report
splits), beside the uncertainty weighting and the approximately optimal fixed weights of Table 1
(the tuned baseline, chosen with their overall scale). Runs are shared with Table 1 (the
single-task models, the uncertainty weighting, the approx.-optimal row) and with the units
experiment's protocol (depth labels ×100).

Per method: each task's metric and instance AP (mean ± std over seeds), Δm % against the
single-task models (Maninis et al. 2019; lower is better), seconds per training step relative to
``equal``, peak memory, and for every loss weighting the same metrics with depth labels ×100.

:func:`~uncertainty_mtl.experiments.benchmark.methods_two_task.reproduce_two_task_methods`
does the same on the two-task study of the reproduction report (classification + reconstruction
on digits or Fashion-MNIST), beside that study's own rows.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from uncertainty_mtl._io import read_jsonl
from uncertainty_mtl.errors import ConfigError, RunDirectoryError
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
from uncertainty_mtl.experiments.benchmark.methods_tuned import (
    OPTIMISER_NAMES,
    Benchmark,
    tuned_table,
    weight_sum_spearman,
)
from uncertainty_mtl.experiments.benchmark.tuning import LrSearch
from uncertainty_mtl.experiments.paper import table1
from uncertainty_mtl.experiments.paper.scene import PRESETS, SceneStudy, cell, mean_metrics
from uncertainty_mtl.experiments.paper.scene_cost import scene_step_costs
from uncertainty_mtl.experiments.paper.units import SCALE, in_units
from uncertainty_mtl.experiments.runner import Run, Runner, training_seconds
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise
from uncertainty_mtl.tasks.registry import SCENE_TASKS as TASKS
from uncertainty_mtl.tasks.registry import TASKS as SPECS
from uncertainty_mtl.weighting.registry import AGGREGATOR, LOSS_WEIGHTING, benchmarked

__all__ = [
    "AUTO",
    "CITY_METHODS",
    "EVERY_METHOD",
    "LOSS_WEIGHTINGS",
    "METHODS",
    "PAIRED_NOTE",
    "PROTOCOLS",
    "check_tuned_preset",
    "compare_rows",
    "delta_m",
    "memory_sentence",
    "methods_markdown",
    "per_step_costs",
    "reproduce_methods",
    "reproduce_methods_tuned",
]

#: ``fixed-lr``: every row at the preset's learning rate (the paper's way); ``tuned``: every row
#: chooses its own on the selection split first.
PROTOCOLS = ("fixed-lr", "tuned")
#: How the city's step cost is measured (written into its JSON; its figure plots it).
SCENE_STEP_COST_HOW = (
    "median seconds of one training step (the trainer's update at the run's own optimiser "
    "and rate) on random batches of the preset's size, alone, 1 thread, the methods in turns "
    "(experiments.scene_cost.scene_step_costs)"
)
#: The registry's first methods: its original loss weightings (``equal`` first), the tuned
#: fixed weights, its original gradient aggregators (the rows of the city's revision-2 table at
#: the cpu preset; ``bench/bench_methods.py`` times them on every shipped config).
LOSS_WEIGHTINGS = benchmarked(LOSS_WEIGHTING)
AGGREGATORS = benchmarked(AGGREGATOR)
METHODS = (*LOSS_WEIGHTINGS, "approx-optimal", *AGGREGATORS)
#: Every loss weighting and gradient aggregator of the registry: the rows of every methods
#: table.
EVERY_AGGREGATOR = benchmarked(AGGREGATOR, every=True)
EVERY_METHOD = (*benchmarked(LOSS_WEIGHTING, every=True), "approx-optimal", *EVERY_AGGREGATOR)
#: The uncertainty weighting with each ``s`` started at its closed-form optimum for the first
#: batch's losses (``init_log_var="auto"``): a row of the city's tables, for the units test.
AUTO = "uncertainty-auto"
#: The city's rows: every method, and :data:`AUTO` beside the uncertainty weighting.
CITY_METHODS = (*EVERY_METHOD[:2], AUTO, *EVERY_METHOD[2:])


def method_run(method: str, seed: int, chosen: tuple[float, float, float] | None = None) -> Run:
    """A method's 3-task run; the uncertainty weighting and the approx.-optimal weights are
    Table 1's rows (the same runs)."""
    if method == "uncertainty":
        return table1.row_run("uw-three", seed)
    if method == AUTO:
        return table1.row_run("uw-three", seed).with_patch(
            "uw-three-auto", **{"weighting.init_log_var": "auto"}
        )
    if method == "approx-optimal":
        return table1.row_run("approx-optimal", seed, chosen)
    return Run(f"method-{method}", {"tasks": list(TASKS), "weighting.kind": method}, seed)


#: Δm % against the single-task models, the scene's three tasks by default
#: (:func:`~uncertainty_mtl.experiments.benchmark.methods_stats.delta_m`).
delta_m = functools.partial(task_delta_m, tasks=TASKS)


def per_step_costs(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
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


def compare_rows(rows: dict[str, dict[str, Any]], tasks: Sequence[str]) -> None:
    """The paired Δm differences against the baselines, and each row's mean rank over tasks."""
    paired_rows(rows)
    for method, rank in mean_ranks(rows, tasks, lambda t: SPECS[t].metric).items():
        rows[method]["mean_rank"] = rank


PAIRED_NOTE = (
    "Every row at the preset's learning rate (the fixed-lr protocol: it ranks step sizes as "
    "much as methods). Δm − equal: the mean of the per-seed differences of Δm against equal's "
    "run of the same seed, with its 95% Student-t interval (a row is better or worse than equal "
    "only where the paired t-test's p, Holm-adjusted over the rows, is below 0.05; suggestive "
    "where only the interval excludes 0). Mean rank: each task's rank among the rows (1 = best), "
    "averaged over the tasks."
)


def _cost_cell(row: Mapping[str, Any]) -> str:
    return f"{row['seconds_per_step']['mean']:.3f} / {row['cost_vs_equal']:.2f}×"


def memory_sentence(kind: str | None) -> str:
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
    runs = {m: [method_run(m, s, chosen) for s in range(seeds)] for m in CITY_METHODS}
    scaled = {m: [in_units(r) for r in runs[m]] for m in CITY_METHODS}
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
    for method in CITY_METHODS:
        results = [done[r] for r in runs[method]]
        row: dict[str, Any] = {
            "kind": "aggregator" if method in EVERY_AGGREGATOR else "loss weighting",
            "lr": runner.config(runs[method][0]).optim.lr,
            "metrics": mean_metrics(results),
            "delta_m": summarise([delta_m(r["metrics"], single) for r in results]),
            "delta_m_all_pairs": all_pairs_delta_m(results, references, delta_m),
            **per_step_costs(results),
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
    for method, cost in scene_step_costs(
        {m: runner.config(runs[m][0]) for m in CITY_METHODS}
    ).items():
        rows[method].update(cost)
    compare_rows(rows, TASKS)
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
        "step_cost": {"how": SCENE_STEP_COST_HOW},
        "weight_sum_spearman": weight_sum_spearman(rows),
        **runner.timing(),
    }
    figure = runner.write_outputs("methods", summary, methods_markdown(summary))
    methods_figure(figure, summary, f"{summary['preset']} preset")
    return summary


#: The tuned protocol's arms on the city: optimiser -> (a run's name suffix, its patch, the
#: grid's centre; ``None``: the preset's rate).
ARMS: dict[str, tuple[str, dict[str, Any], float | None]] = {
    "sgd": ("", {}, None),
    "adam": ("-adam", {"optim.optimizer": "adam"}, 1e-3),  # the units study's Adam rate
}
#: The city's metric columns in the tuned tables.
CITY_COLUMNS = (
    ("IoU [%] ↑", "miou", 1),
    ("instance err. [px] ↓", "instance_mean_error_px", 2),
    ("inv. depth err. [px] ↓", "depth_mean_error_px", 3),
    ("instance AP [%] ↑", "instance_ap", 1),
)


def city_at_rate(run: Run, lr: float, steps: int | None) -> Run:
    """``run`` at learning rate ``lr``; with ``steps``, a shorter selection run (a search's
    first rung: trained on the selection split's training data, scored on it)."""
    name = f"{run.name}-lr{lr:g}"
    if steps is None:
        return run.with_patch(name, **{"optim.lr": lr})
    patch = {**run.patch, "optim.lr": lr, "optim.steps": steps}
    return Run(f"{name}-steps{steps}", patch, run.seed, selection=True)


def selection_metrics(runner: Runner[SceneStudy], run: Run, result: Mapping[str, Any]) -> Any:
    """A finished run's metrics on the selection split: a selection run's result, or a full
    run's validation at the checkpoint it kept (from its ``metrics.jsonl``)."""
    if run.selection:
        return result["metrics"]
    best, split = result["training"]["best_step"], result["training"]["selection_split"]
    path = runner.run_dir(run) / "metrics.jsonl"
    found = [r for r in read_jsonl(path) if r.get("split") == split and r.get("step") == best]
    if not found:
        raise RunDirectoryError(f"{path}: no {split} record at the kept step {best}")
    prefix = f"{split}/"
    return {k.removeprefix(prefix): v for k, v in found[-1].items() if k.startswith(prefix)}


def check_tuned_preset(preset: str) -> None:
    """Raises ConfigError where the scene ``preset`` cannot run the tuned protocol (its runs
    validate on no selection split)."""
    if PRESETS[preset].select_split is None:
        raise ConfigError(
            f"--protocol tuned needs a preset whose runs validate on a selection split; "
            f"--preset {preset} has none (use cpu, cpu-lite or smoke)"
        )


def reproduce_methods_tuned(
    runner: Runner[SceneStudy],
    *,
    seeds: int = 5,
    optimiser: str = "sgd",
    search: LrSearch | None = None,
) -> dict[str, Any]:
    """The city's methods under the tuned protocol, one arm (``optimiser``): every method of
    :data:`EVERY_METHOD` and the three single-task references tune their rate on the
    selection split (:func:`~uncertainty_mtl.experiments.benchmark.methods_tuned.tuned_table`), then
    train ``seeds`` seeds; writes ``methods-tuned-<optimiser>.json``, ``.md`` and ``.png``.
    The approx.-optimal row keeps Table 1's weights (chosen with their sum at the preset's SGD
    rate)."""
    if optimiser not in ARMS:
        raise ConfigError(f"--optimiser must be one of {list(ARMS)}, got {optimiser!r}")
    check_tuned_preset(runner.study.preset)
    spec = runner.study.spec
    assert spec.select_split is not None  # checked above
    start = time.perf_counter()
    chosen, _, _ = table1.approx_optimal(runner)
    suffix, patch, centre = ARMS[optimiser]

    def arm(run: Run) -> Run:
        return run.with_patch(run.name + suffix, **patch) if patch else run

    rows = {m: arm(method_run(m, 0, chosen)) for m in EVERY_METHOD}
    config = runner.config(rows["equal"])
    bench = Benchmark(
        title=f"{runner.study.preset} preset, 3 tasks, {OPTIMISER_NAMES[optimiser]}",
        optimiser=optimiser,
        tasks=tuple(TASKS),
        base_lr=config.optim.lr if centre is None else centre,
        length=config.optim.steps,
        singles={f"{t}-only": (arm(table1.row_run(f"{t}-only", 0)), t) for t in TASKS},
        at_rate=city_at_rate,
        selection_metrics=lambda run, result: selection_metrics(runner, run, result),
        summaries=mean_metrics,
        costs=lambda runs: scene_step_costs({n: runner.config(r) for n, r in runs.items()}),
        columns=CITY_COLUMNS,
        extra={"preset": runner.study.preset},
        reference_note="Table 1's weights ("
        + ", ".join(f"{t} {w:g}" for t, w in zip(TASKS, chosen, strict=True))
        + ": direction and sum chosen on the selection split at the preset's SGD rate)",
        cost_how=SCENE_STEP_COST_HOW,
        splits=(spec.select_split, spec.report_split),
    )
    return tuned_table(
        bench,
        runner,
        rows,
        seeds=seeds,
        search=search or LrSearch(),
        start=start,
        aggregators=EVERY_AGGREGATOR,
        name=f"methods-tuned-{optimiser}",
    )


def methods_markdown(summary: Mapping[str, Any]) -> str:
    headers = [
        "method",
        "IoU [%] ↑",
        "instance err. [px] ↓",
        "inv. depth err. [px] ↓",
        "instance AP [%] ↑",
        "Δm [%] ↓",
        "Δm − equal, paired [95% CI]",
        "mean rank",
        "s / step, runs' own / step cost (× equal)",
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
    memory_note = memory_sentence(next(iter(summary["rows"].values()))["peak_memory_kind"])
    return "\n".join(
        [
            f"# Methods ({summary['preset']} preset): 3 tasks, one protocol",
            "",
            f"Reported split: {summary['report_split']}; mean ± std over "
            f"{len(summary['seeds'])} seed(s). Δm against the single-task models of Table 1 "
            f"(lower is better). {PAIRED_NOTE} Seconds per step: each run's training time "
            "over its steps (it mixes whatever else the machine did); step cost: one training "
            "step on random batches of the preset's size, timed alone (1 thread, the methods "
            f"in turns), over equal's; {memory_note}. The last column repeats every row with "
            "the depth labels ×100 (metrics in pixels; the fixed weights keep the ones chosen "
            "in pixels). uncertainty-auto: the uncertainty weighting with each s started at "
            "its optimum for the first batch's losses (`init_log_var: auto`).",
            "",
            markdown_table(headers, lines),
        ]
    )
