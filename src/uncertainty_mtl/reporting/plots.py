"""Figure helpers on matplotlib's object API (no pyplot state, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from uncertainty_mtl._io import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["cost_scatter", "ema", "label_points", "mean_band", "new_figure", "save_figure"]


def new_figure(
    ncols: int, *, nrows: int = 1, width: float = 5.0, height: float = 3.6
) -> tuple[Figure, list[Axes]]:
    """A figure with a grid of axes, returned flat."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def mean_band(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    runs: Sequence[Sequence[float]] | np.ndarray,
    *,
    label: str,
    **kwargs: Any,
) -> None:
    """Plots the mean over runs (rows of ``runs``) with a ±1 std band."""
    values = np.asarray(runs, dtype=float)
    mean = values.mean(axis=0)
    (line,) = ax.plot(x, mean, label=label, **kwargs)
    if len(values) > 1:
        std = values.std(axis=0, ddof=1)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def ema(values: Sequence[float], alpha: float = 0.1) -> np.ndarray:
    """Exponential moving average, for noisy per-step curves."""
    out = np.empty(len(values))
    acc = float(values[0]) if len(values) else 0.0
    for i, v in enumerate(values):
        acc = alpha * float(v) + (1 - alpha) * acc
        out[i] = acc
    return out


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> None:
    """Writes a PNG atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


#: Where a point's label may go, in points from the point, in order of preference.
_LABEL_OFFSETS = ((5, 4), (5, -11), (-5, 4), (-5, -11), (0, 9), (0, -15), (9, -4), (-9, -4))


def label_points(
    ax: Axes, points: Sequence[tuple[float, float, str]], *, fontsize: int = 8
) -> None:
    """Labels each point ``(x, y, text)`` at the first of a few places around it where the
    label overlaps no label placed before and no other point (the first place if none is
    free)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig: Any = ax.figure
    canvas = FigureCanvasAgg(fig) if not isinstance(fig.canvas, FigureCanvasAgg) else fig.canvas
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    fig.draw_without_rendering()  # the layout: data to display coordinates as saved
    marks = [ax.transData.transform((x, y)) for x, y, _ in points]
    placed: list[Any] = []
    for (x, y, text), mark in zip(points, marks, strict=True):
        label = None
        for dx, dy in _LABEL_OFFSETS:
            if label is not None:
                label.remove()
            label = ax.annotate(
                text,
                (x, y),
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=fontsize,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
            )
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            others = [m for m in marks if m is not mark]
            if not any(box.overlaps(b) for b in placed) and not any(
                box.contains(*m) for m in others
            ):
                break
        else:  # nowhere free: the first place
            assert label is not None
            label.remove()
            dx, dy = _LABEL_OFFSETS[0]
            label = ax.annotate(
                text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize
            )
        placed.append(label.get_window_extent(renderer))


#: The colour of each family of methods in the methods benchmark's figures.
FAMILY_COLOURS = {
    "the uncertainty weighting": "tab:red",
    "loss weighting": "tab:blue",
    "gradient aggregator": "tab:orange",
}


def cost_scatter(
    path: str | os.PathLike[str],
    rows: Sequence[tuple[str, str, float, float, float]],
    *,
    title: str,
    xlabel: str,
    errors: str,
) -> None:
    """The methods benchmark's figure, one row per ``(method, family, cost, Δm, error)``
    (family: a key of :data:`FAMILY_COLOURS`), best Δm on top: left, Δm with its error bar;
    right, the cost of a step, on the same rows. One label per row, so none overlaps another,
    however close two methods' numbers are."""
    from matplotlib.lines import Line2D

    ordered = sorted(rows, key=lambda r: r[3], reverse=True)  # best (lowest) at the top
    y = np.arange(len(ordered))
    fig, (left, right) = new_figure(2, width=4.2, height=0.8 + 0.26 * len(ordered))
    colours = [FAMILY_COLOURS[family] for _, family, *_ in ordered]
    for i, (_, _, _, delta, error) in enumerate(ordered):
        left.errorbar(delta, i, xerr=error, fmt="o", color=colours[i], capsize=3, ms=4)
    left.axvline(0, color="grey", lw=0.8, ls="--")
    left.set_yticks(y, [name for name, *_ in ordered], fontsize=7)
    left.set_xlabel("Δm [%] against single-task models (lower is better)", fontsize=8)
    costs = [cost for _, _, cost, _, _ in ordered]
    right.barh(y, costs, color=colours)
    for i, cost in enumerate(costs):
        right.annotate(f"{cost:.2f}×", (cost, i), xytext=(3, 0), textcoords="offset points",
                       va="center", fontsize=6)  # fmt: skip
    right.axvline(1, color="grey", lw=0.8, ls="--")
    right.set_yticks(y, [""] * len(ordered))
    right.set_xlim(0, max(costs) * 1.18)
    right.set_xlabel(xlabel, fontsize=8)
    for ax in (left, right):
        ax.set_ylim(-0.6, len(ordered) - 0.4)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
    handles = [
        Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in FAMILY_COLOURS.items()
    ]
    fig.suptitle(f"{title}; {errors}", fontsize=9)
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=3, frameon=False)
    save_figure(fig, path)
