"""Figure 2 of the paper: fixed-weight sweeps for two task pairs, with the learned weighting.

(a) semantic + depth and (b) instance + depth, 11 weights each (the paper's, plus 0.9 in (b),
whose published sweep has 10). The ends of each sweep are the single-task models of Table 1
and the learned weighting is Table 1's 2-task row, so runs are shared with ``table1``, except
where the preset gives Figure 2 its own keys (``Preset.figure2_patch``: the ``paper`` preset
trains the sweeps at lr 0.01, as the paper's caption says; the ``cpu`` preset keeps its lr 0.02).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uncertainty_mtl.experiments.paper.scene import (
    SceneStudy,
    cell,
    fixed_run,
    learned_run,
    mean_metrics,
)
from uncertainty_mtl.experiments.paper.table1 import row_run
from uncertainty_mtl.experiments.runner import Run, Runner
from uncertainty_mtl.reporting.plots import new_figure, save_figure
from uncertainty_mtl.reporting.tables import markdown_table

__all__ = ["PAPER", "SWEEPS", "reproduce_figure2"]

#: task -> (metric key, axis label, decimals)
METRIC = {
    "semantic": ("miou", "IoU [%] ↑", 1),
    "instance": ("instance_mean_error_px", "instance error [px] ↓", 2),
    "depth": ("depth_mean_error_px", "inverse depth error [px] ↓", 3),
}
#: pair -> weights of the first task (the second gets 1 − w)
SWEEPS: dict[tuple[str, str], tuple[float, ...]] = {
    ("semantic", "depth"): (1.0, 0.975, 0.95, 0.9, 0.85, 0.8, 0.7, 0.5, 0.2, 0.1, 0.0),
    ("instance", "depth"): (1.0, 0.9, 0.75, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.025, 0.0),
}
#: The paper's Figure 2 tables: weight of the first task -> (first metric, depth error).
PAPER: dict[tuple[str, str], dict[float, tuple[float | None, float | None]]] = {
    ("semantic", "depth"): {
        1.0: (59.4, None),
        0.975: (59.5, 0.664),
        0.95: (59.9, 0.603),
        0.9: (60.1, 0.586),
        0.85: (60.4, 0.582),
        0.8: (59.6, 0.577),
        0.7: (59.0, 0.573),
        0.5: (56.3, 0.602),
        0.2: (47.2, 0.625),
        0.1: (42.7, 0.628),
        0.0: (None, 0.640),
        -1: (62.7, 0.533),
    },
    ("instance", "depth"): {
        1.0: (4.61, None),
        0.75: (4.52, 0.692),
        0.5: (4.30, 0.655),
        0.4: (4.14, 0.641),
        0.3: (4.04, 0.615),
        0.2: (3.83, 0.607),
        0.1: (3.91, 0.600),
        0.05: (4.27, 0.607),
        0.025: (4.31, 0.624),
        0.0: (None, 0.640),
        -1: (3.54, 0.539),
    },
}


def _patched(run: Run, patch: Mapping[str, Any]) -> Run:
    if not patch:
        return run
    suffix = "".join(f"-{key.rsplit('.', 1)[-1]}{value:g}" for key, value in patch.items())
    return run.with_patch(run.name + suffix, **patch)


def sweep_run(
    pair: tuple[str, str], w: float, seed: int, patch: Mapping[str, Any] | None = None
) -> Run:
    if w == 1.0:
        run = row_run(f"{pair[0]}-only", seed)
    elif w == 0.0:
        run = row_run(f"{pair[1]}-only", seed)
    else:
        run = fixed_run(
            f"{pair[0]}{w:g}-{pair[1]}{1 - w:g}", {pair[0]: w, pair[1]: round(1 - w, 6)}, seed=seed
        )
    return _patched(run, patch or {})


def learned(pair: tuple[str, str], seed: int, patch: Mapping[str, Any] | None = None) -> Run:
    return _patched(learned_run(f"uw-{pair[0]}-{pair[1]}", pair, seed=seed), patch or {})


def reproduce_figure2(runner: Runner[SceneStudy], *, seeds: int = 1) -> dict[str, Any]:
    """Trains what is missing; writes ``figure2.png``, ``figure2.md`` and ``figure2.json``."""
    extra = runner.study.spec.figure2_patch
    runs = [sweep_run(p, w, s, extra) for p, ws in SWEEPS.items() for w in ws for s in range(seeds)]
    runs += [learned(p, s, extra) for p in SWEEPS for s in range(seeds)]
    done = runner.results(runs)
    panels = {}
    for pair, weights in SWEEPS.items():
        points = []
        for w in weights:
            results = [done[sweep_run(pair, w, s, extra)] for s in range(seeds)]
            points.append({"weight": w, "metrics": mean_metrics(results)})
        uw = mean_metrics([done[learned(pair, s, extra)] for s in range(seeds)])
        panels["-".join(pair)] = {"pair": list(pair), "points": points, "learned": uw}
    summary = {
        "experiment": "figure2",
        "preset": runner.study.preset,
        "report_split": runner.study.spec.report_split,
        "lr": runner.config(runs[0]).optim.lr,
        "seeds": list(range(seeds)),
        "panels": panels,
        **runner.timing(),
    }
    _plot(runner.write_outputs("figure2", summary, _markdown(summary)), summary)
    return summary


def _markdown(summary: dict[str, Any]) -> str:
    text = [
        f"# Figure 2 ({summary['preset']} preset)",
        "",
        f"Reported split: {summary['report_split']}; mean ± std over "
        f"{len(summary['seeds'])} seed(s); every run at lr {summary['lr']:g}"
        " (the paper's sweeps: 0.01, its caption). Paper: Tiny Cityscapes val.",
        "",
    ]
    for panel in summary["panels"].values():
        first, second = panel["pair"]
        (k1, name1, d1), (k2, name2, d2) = METRIC[first], METRIC[second]
        paper = PAPER[(first, second)]
        headers = [
            f"{first} weight",
            f"{second} weight",
            f"{first}: {name1}",
            f"{second}: {name2}",
            f"paper: {first}",
            f"paper: {second}",
        ]
        rows = []
        for point in panel["points"]:
            w = point["weight"]
            p1, p2 = paper.get(w, (None, None))
            rows.append(
                [
                    f"{w:g}",
                    f"{1 - w:g}",
                    cell(point["metrics"], k1, d1),
                    cell(point["metrics"], k2, d2),
                    "–" if p1 is None else f"{p1}",
                    "–" if p2 is None else f"{p2}",
                ]
            )
        p1, p2 = paper[-1]
        rows.append(
            [
                "learned",
                "learned",
                cell(panel["learned"], k1, d1),
                cell(panel["learned"], k2, d2),
                f"{p1}",
                f"{p2}",
            ]
        )
        text += [f"## {first} + {second}", "", markdown_table(headers, rows)]
    return "\n".join(text)


def _plot(path: Any, summary: dict[str, Any]) -> None:
    fig, axes = new_figure(2, width=5.5)
    for ax, panel in zip(axes, summary["panels"].values(), strict=True):
        first, second = panel["pair"]
        twin = ax.twinx()
        for task, axis, colour in ((first, ax, "tab:blue"), (second, twin, "tab:orange")):
            key, name, _ = METRIC[task]
            points = [p for p in panel["points"] if key in p["metrics"]]
            xs = [p["weight"] for p in points]
            means = [p["metrics"][key]["mean"] for p in points]
            stds = [p["metrics"][key]["std"] for p in points]
            axis.errorbar(
                xs,
                means,
                yerr=stds,
                marker="o",
                color=colour,
                capsize=3,
                label=f"{task}, fixed weights",
            )
            if key in panel["learned"]:
                axis.axhline(
                    panel["learned"][key]["mean"],
                    color=colour,
                    ls="--",
                    label=f"{task}, learned weights",
                )
            axis.set_ylabel(f"{task}: {name}", color=colour)
        ax.set_xlabel(f"weight of {first} (weight of {second} = 1 − w)")
        ax.set_title(f"{first} + {second}")
        ax.grid(alpha=0.3)
        handles = [h for a in (ax, twin) for h in a.get_legend_handles_labels()[0]]
        ax.legend(handles=handles, fontsize="small", loc="best")
    save_figure(fig, path)
