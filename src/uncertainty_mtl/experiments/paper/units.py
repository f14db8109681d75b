"""The paper's motivation, measured: fixed weights depend on the units of the losses.

Semantic segmentation + depth, with depth labels in pixels of disparity and in units of 1/100
pixel (labels ×100, so its L1 loss is 100× larger). The best fixed weights are chosen in pixels
(on the selection split, from :data:`GRID`) and then used with the ×100 labels; the learned
weighting runs in both units. Metrics are always reported in pixels.

The test runs under three trainings (:data:`TRAININGS`): the preset's SGD; Adam at 1e-3, the
optimiser most users would pick (its fixed weights chosen again, with Adam); and SGD with 4× the
preset's steps (the fixed weights chosen at the preset's steps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from uncertainty_mtl.experiments.benchmark.selection import CANDIDATE_CRITERION, choose
from uncertainty_mtl.experiments.paper.scene import (
    SceneStudy,
    cell,
    fixed_run,
    learned_run,
    mean_metrics,
)
from uncertainty_mtl.experiments.runner import Run, Runner
from uncertainty_mtl.reporting.tables import markdown_table

__all__ = ["GRID", "SCALE", "TRAININGS", "in_units", "reproduce_units"]

PAIR = ("semantic", "depth")
GRID = (0.975, 0.9, 0.7, 0.5)  # weight of semantic; depth gets 1 − w
SCALE = 100.0
#: training -> (run name suffix, label); "sgd" is the preset's own.
TRAININGS: dict[str, tuple[str, str]] = {
    "sgd": ("", "SGD"),
    "adam": ("-adam", "Adam, lr 1e-3"),
    "sgd-4x": ("-steps4x", "SGD, 4× steps"),
}
ADAM = {"optim.optimizer": "adam", "optim.lr": 1e-3}


def _scaled(scale: float) -> dict[str, float]:
    return {} if scale == 1.0 else {"data.depth_scale": scale}


def fixed(w: float, scale: float, *, seed: int = 0, selection: bool = False) -> Run:
    run = fixed_run(
        f"semantic{w:g}-depth{1 - w:g}",
        {"semantic": w, "depth": round(1 - w, 6)},
        seed=seed,
        selection=selection,
    )
    return in_units(run, scale)


def in_units(run: Run, scale: float = SCALE) -> Run:
    """``run`` with the depth labels × ``scale`` (metrics stay in pixels)."""
    if scale == 1.0:
        return run
    return run.with_patch(f"{run.name}-depthx{scale:g}", **_scaled(scale))


def learned(scale: float, seed: int = 0, *, depth_init: float | None = None) -> Run:
    """The learned weighting; ``depth_init`` starts the depth task's ``s`` there."""
    name = "uw-semantic-depth" + ("" if scale == 1.0 else f"-depthx{scale:g}")
    patch: dict[str, Any] = dict(_scaled(scale))
    if depth_init is not None:
        name += f"-s0depth{depth_init:g}"
        patch["weighting.init_log_var"] = {"depth": depth_init}
    return learned_run(name, PAIR, patch, seed=seed)


def shifted_optimum(result: dict[str, Any], scale: float) -> float:
    """Where the depth task's ``s`` should end with labels × ``scale``: the final ``s`` of the
    run in pixels moved by 2·log(scale), to two decimals. (The likelihood convention: a Laplace
    term on an L1 loss and a Gaussian term on a squared loss both move by 2·log(scale); the
    paper convention's Gaussian term on an L1 loss would move by log(scale).)"""
    final = float(result["training"]["weighting_at_kept_checkpoint"]["log_var/depth"])
    return round(final + 2.0 * math.log(scale), 2)


def under(run: Run, training: str, steps: int) -> Run:
    """``run`` under another training of :data:`TRAININGS` (``steps``: the preset's)."""
    if training == "sgd":
        return run
    patch = ADAM if training == "adam" else {"optim.steps": 4 * steps}
    return run.with_patch(run.name + TRAININGS[training][0], **patch)


def reproduce_units(runner: Runner[SceneStudy], *, seeds: int = 1) -> dict[str, Any]:
    """Trains what is missing; writes ``units.md`` and ``units.json``."""
    steps = runner.config(learned(1.0)).optim.steps
    grids = {
        training: [under(fixed(w, 1.0, selection=True), training, steps) for w in GRID]
        for training in ("sgd", "adam")
    }
    done = runner.results(
        [
            *grids["sgd"],
            *grids["adam"],
            *[learned(s, k) for s in (1.0, SCALE) for k in range(seeds)],
        ]
    )
    best: dict[str, float] = {}
    scores: dict[str, dict[float, float]] = {}
    for training, grid in grids.items():
        best[training], scores[training] = choose(
            {w: done[run]["metrics"] for w, run in zip(GRID, grid, strict=True)}, PAIR
        )
    best["sgd-4x"] = best["sgd"]  # 4× steps: the weights chosen at the preset's steps
    # Diagnostic: depth's s starts where it should end, so no early transient.
    starts = [shifted_optimum(done[learned(1.0, k)], SCALE) for k in range(seeds)]
    rows_runs: dict[tuple[str, str, float], list[Run]] = {}
    for training in TRAININGS:
        w = best[training]
        rows_runs[("fixed", training, 1.0)] = [
            under(fixed(w, 1.0, seed=k), training, steps) for k in range(seeds)
        ]
        rows_runs[("fixed", training, SCALE)] = [
            under(fixed(w, SCALE, seed=k), training, steps) for k in range(seeds)
        ]
        for scale in (1.0, SCALE):
            rows_runs[("learned", training, scale)] = [
                under(learned(scale, k), training, steps) for k in range(seeds)
            ]
        if training == "sgd":
            rows_runs[("learned, s₀ at the optimum", training, SCALE)] = [
                learned(SCALE, k, depth_init=start) for k, start in enumerate(starts)
            ]
    done.update(runner.results([r for runs in rows_runs.values() for r in runs]))
    rows = []
    for (kind, training, scale), runs in rows_runs.items():
        results = [done[r] for r in runs]
        entry: dict[str, Any] = {
            "weighting": kind,
            "training": training,
            "steps": runner.config(runs[0]).optim.steps,
            "depth_units": f"1/{scale:g} px" if scale != 1 else "px",
            "metrics": mean_metrics(results),
        }
        if kind == "fixed":
            entry["semantic_weight"] = best[training]
        if kind.startswith("learned"):
            if kind != "learned":
                entry["initial_log_var_depth"] = starts
            final = [r["training"]["weighting_at_kept_checkpoint"] for r in results]
            entry["log_var_depth"] = sum(f["log_var/depth"] for f in final) / len(final)
            entry["log_var_semantic"] = sum(f["log_var/semantic"] for f in final) / len(final)
        rows.append(entry)
    summary = {
        "experiment": "units",
        "preset": runner.study.preset,
        "scale": SCALE,
        "chosen_semantic_weight": best,
        "criterion": CANDIDATE_CRITERION,
        "candidates": {
            training: {f"{w:g}": v for w, v in candidate.items()}
            for training, candidate in scores.items()
        },
        "rows": rows,
        "seeds": list(range(seeds)),
        **runner.timing(),
    }
    runner.write_outputs(
        "units",
        summary,
        _markdown(summary, runner.study.spec.choose_split),
    )
    return summary


def _markdown(summary: dict[str, Any], choose_split: str) -> str:
    """``units.md`` from ``units.json``'s content (``choose_split``: where weights were chosen)."""
    best, scale = summary["chosen_semantic_weight"], summary["scale"]
    headers = [
        "training",
        "weighting",
        "depth labels in",
        "IoU [%] ↑",
        "inv. depth err. [px] ↓",
        "final s (semantic, depth)",
    ]

    def label(row: dict[str, Any]) -> str:
        if row["weighting"] == "fixed":
            w = row["semantic_weight"]
            return f"fixed ({w:g}, {1 - w:g})"
        starts = row.get("initial_log_var_depth")
        return str(row["weighting"]) + (f" (s₀ = {np.mean(starts):.2f})" if starts else "")

    lines = [
        [
            f"{TRAININGS[r['training']][1]}, {r['steps']:,} steps",
            label(r),
            r["depth_units"],
            cell(r["metrics"], "miou", 1),
            cell(r["metrics"], "depth_mean_error_px", 3),
            f"{r['log_var_semantic']:.2f}, {r['log_var_depth']:.2f}"
            if "log_var_depth" in r
            else "–",
        ]
        for r in summary["rows"]
    ]
    shift = 2 * math.log(scale)
    intro = (
        f"Fixed weights chosen in pixels on the {choose_split} split from "
        f"{', '.join(f'{w:g}' for w in GRID)} (semantic; depth 1 − w): {best['sgd']:g} with SGD, "
        f"{best['adam']:g} with Adam (chosen again with Adam; the 4× steps rows use SGD's "
        f"choice). The same weights with depth labels ×{scale:g}, and the learned weighting in "
        "both units. Metrics in pixels, reported split; mean ± std over "
        f"{len(summary['seeds'])} seed(s). A Laplace term's optimal s moves by "
        f"2·log {scale:g} = {shift:.1f} when its loss grows {scale:g}-fold. The row "
        "“learned, s₀ …” starts depth's s at the pixel run's final s + "
        f"2·log {scale:g} instead of 0."
    )
    title = f"# Units ({summary['preset']} preset): semantic + depth, depth in two units"
    return "\n".join([title, "", intro, "", markdown_table(headers, lines)])
