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

__all__ = ["ema", "mean_band", "new_figure", "save_figure"]


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
