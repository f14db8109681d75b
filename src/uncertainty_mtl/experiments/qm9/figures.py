"""The QM9 study's figure: each row's Δm under both target scalings, and whether the learned
σ of the uncertainty weighting predicts each target's test error."""

from __future__ import annotations

import os
from typing import Any

from uncertainty_mtl.reporting.plots import label_points, new_figure, save_figure
from uncertainty_mtl.reporting.stats import mean_interval

__all__ = ["plot_qm9"]

_MARKERS = {"standardised": ("o", "tab:blue"), "raw": ("s", "tab:red")}


def plot_qm9(summary: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``qm9.png``: left, each row's Δm (mean and 95% interval over seeds) per scaling;
    right, per target, the MAE the learned σ predicts (σ·√(2/π)) against the test MAE, for the
    uncertainty weighting under each scaling (the diagonal: σ is the error)."""
    fig, (left, right) = new_figure(2, width=6.0, height=4.2)
    units = summary["units"]
    methods = list(next(iter(units.values()))["rows"])
    offsets = {u: (i - (len(units) - 1) / 2) * 0.18 for i, u in enumerate(units)}
    for u, part in units.items():
        marker, colour = _MARKERS.get(u, ("^", "tab:green"))
        ys = [len(methods) - 1 - i + offsets[u] for i in range(len(methods))]
        values = [part["rows"][m]["delta_m"]["values"] for m in methods]
        left.errorbar(
            [sum(v) / len(v) for v in values],
            ys,
            xerr=[mean_interval(v) for v in values],
            fmt=marker,
            color=colour,
            capsize=3,
            label=f"targets {u}",
        )
    left.axvline(0.0, color="grey", lw=0.8, ls="--")
    # raw units cost hundreds of points, the rows differ by a few: linear within ±10, log beyond
    left.set_xscale("symlog", linthresh=10.0)
    left.set_yticks(range(len(methods)), list(reversed(methods)))
    left.set_xlabel("Δm % against single-task (lower is better; symmetric log beyond ±10)")
    left.set_title(f"QM9, 11 targets: mean and 95% CI over {len(summary['seeds'])} seeds")
    left.legend(fontsize=8)

    lows, highs = [], []
    for u, part in units.items():
        sigma = part["rows"].get("uncertainty", {}).get("sigma_vs_mae")
        if not sigma:
            continue
        marker, colour = _MARKERS.get(u, ("^", "tab:green"))
        targets = sigma["targets"]
        xs = [v["mae"] for v in targets.values()]
        ys = [v["predicted_mae"] for v in targets.values()]
        right.scatter(
            xs,
            ys,
            marker=marker,
            color=colour,
            label=f"uncertainty, targets {u} (Spearman {sigma['spearman']:+.2f})",
        )
        if u == "standardised":
            label_points(right, [(x, y, t) for x, y, t in zip(xs, ys, targets, strict=True)])
        lows.append(min(xs + ys))
        highs.append(max(xs + ys))
    if lows:
        span = [min(lows) / 2, max(highs) * 2]
        right.plot(span, span, color="grey", lw=0.8, ls="--")
        right.set_xscale("log")
        right.set_yscale("log")
        right.legend(fontsize=8, loc="upper left")
    right.set_xlabel("test MAE, in the target's unit")
    right.set_ylabel("MAE the learned σ predicts, σ·√(2/π)")
    right.set_title("Does the learned σ track each target's error?")
    save_figure(fig, path)
