"""Summaries over seeds and Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "format_mean_std",
    "markdown_table",
    "metrics_summary",
    "summarise",
    "summarise_metrics",
]


def summarise(values: Sequence[float]) -> dict[str, float | list[float] | int]:
    """``{"mean", "std", "n", "values"}`` of per-seed values; ``std`` is the sample standard
    deviation (``ddof=1``), 0 for a single seed."""
    if not values:
        raise ValueError("nothing to summarise")
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": n, "values": list(values)}


def format_mean_std(summary: dict | None, digits: int) -> str:
    """``"97.25 ± 0.31"``, or ``"–"`` for a missing summary; the ± part only with >1 seed."""
    if summary is None:
        return "–"
    mean = f"{summary['mean']:.{digits}f}"
    return f"{mean} ± {summary['std']:.{digits}f}" if summary["n"] > 1 else mean


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells, the header {len(headers)}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summarise_metrics(results: Iterable[Mapping[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    """Seed summaries (:func:`summarise`) of the scalar metrics ``keys`` that every one of the
    runs' ``results["metrics"]`` has as a finite number."""
    results = list(results)
    out = {}
    for key in keys:
        values = [r["metrics"][key] for r in results if key in r["metrics"]]
        if values and all(isinstance(v, float | int) and v == v for v in values):
            out[key] = summarise(values)
    return out


#: Metrics that are percentages, by their key in a ``results.json``.
_PERCENT = ("miou", "pixel_accuracy", "instance_ap", "instance_ap50", "accuracy")


def _with_unit(key: str, value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if key in _PERCENT:
        return f"{value:.2f} %"
    if key.endswith("_pixels"):
        return f"{value:,} labelled pixels"
    if key.endswith("_px"):
        return f"{value:.4g} px"
    return f"{value:.4g}"


def metrics_summary(results: Mapping[str, Any]) -> str:
    """A ``results.json``'s split and scalar metrics, a line each with its unit (what
    ``umtl train`` and ``umtl evaluate`` print)."""
    scalars = {k: v for k, v in results["metrics"].items() if not isinstance(v, dict)}
    frames, kept = results.get("frames"), results.get("checkpoint")
    head = (
        f"{results['split']} split"
        + (f", {frames} frames" if frames is not None else "")
        + (f", {kept} checkpoint" if kept else "")
        + " (every number, per class too, in results.json):"
    )
    width = max(map(len, scalars), default=0)
    return "\n".join([head, *(f"  {k:<{width}}  {_with_unit(k, v)}" for k, v in scalars.items())])
