"""Summaries over seeds and Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["format_mean_std", "markdown_table", "summarise", "summarise_metrics"]


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
