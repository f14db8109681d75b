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

__all__ = ["ema", "label_points", "mean_band", "new_figure", "save_figure"]


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
