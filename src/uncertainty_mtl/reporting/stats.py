"""Paired comparisons over seeds: the statistics behind a sentence that ranks two rows.

Two rows trained with the same seeds share their initialisation and batch order, so their
per-seed differences are paired; the interval is Student's t over those differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ALPHA",
    "delta_m",
    "format_interval",
    "holm",
    "holm_family",
    "mean_interval",
    "paired_difference",
    "paired_p",
    "verdict",
]

#: The level of every test: a 95% interval, a p-value below 0.05 (Holm-adjusted for a family).
ALPHA = 0.05


def delta_m(
    values: Mapping[str, float],
    references: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """Δm % (Maninis et al., 2019) over the tasks of ``references``:
    ``(1/T)·Σ_t (−1)^{l_t}·(M_t − M_t^ref)/M_t^ref·100``, ``l_t = 1`` where higher is better.
    The mean relative loss against the references (lower is better; 0: as good as they are on
    average). Every study's Δm is this one."""
    terms = []
    for task, base in references.items():
        sign = -1.0 if higher_is_better[task] else 1.0
        terms.append(sign * (float(values[task]) - float(base)) / float(base) * 100.0)
    return sum(terms) / len(terms)


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, higher_is_better: bool
) -> dict[str, Any]:
    """How row ``a`` compares with row ``b`` over paired seeds.

    Args:
        a, b: one value per seed, in the same seed order.
        higher_is_better: the metric's direction (accuracy: True; an error: False).

    Returns:
        ``differences`` (a − b per seed), ``mean``, ``ci95`` (``[low, high]`` of the mean
        difference, Student's t; ``None`` for one seed), ``p_improve`` (the share of seeds
        where ``a`` is better than ``b``), ``n`` (the seeds), ``p`` (the two-sided paired t-test,
        :func:`paired_p`) and ``verdict`` (:func:`verdict`, unadjusted; :func:`holm_family` adds
        ``p_holm`` and ``verdict_holm`` once the comparison's family is known).
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs equal, non-empty lists, got {len(a)}, {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    half = mean_interval(diffs)
    ci = None if n < 2 else [mean - half, mean + half]
    sign = 1.0 if higher_is_better else -1.0
    return {
        "differences": diffs,
        "mean": mean,
        "ci95": ci,
        "p_improve": sum(sign * d > 0 for d in diffs) / n,
        "n": n,
        "p": paired_p(diffs),
        "verdict": verdict(ci, higher_is_better=higher_is_better),
    }


def paired_p(differences: Sequence[float]) -> float | None:
    """The two-sided p-value of Student's paired t-test that the mean of ``differences`` is 0
    (``None`` for one seed; 1 when every difference is 0, 0 when they are equal and not 0)."""
    n = len(differences)
    if n < 2:
        return None
    mean = math.fsum(differences) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    from scipy.stats import t

    return float(2 * t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family's p-values (in their order; ``None`` stays
    ``None`` and is not counted): the ``k``-th smallest of ``m`` is multiplied by ``m − k + 1``,
    made no smaller than those before it, and capped at 1."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(order)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


def holm_family(
    comparisons: Sequence[dict[str, Any]], *, higher_is_better: bool, alpha: float = ALPHA
) -> None:
    """Adds ``p_holm`` (Holm over the family: every comparison against one baseline in one
    table) and ``verdict_holm`` to each of :func:`paired_difference`'s ``comparisons``:
    ``"better"`` or ``"worse"`` where the adjusted p is below ``alpha`` (by the sign of the mean
    and the metric's direction), else ``"not separated"``."""
    adjusted = holm([c["p"] for c in comparisons])
    for comparison, p in zip(comparisons, adjusted, strict=True):
        comparison["p_holm"] = p
        if p is None or p >= alpha:
            comparison["verdict_holm"] = "not separated"
        else:
            above = comparison["mean"] > 0
            comparison["verdict_holm"] = "better" if above == higher_is_better else "worse"


def mean_interval(values: Sequence[float]) -> float:
    """Half the width of the 95% Student-t interval of the mean of ``values`` (0 for one)."""
    n = len(values)
    if n < 2:
        return 0.0
    from scipy.stats import t

    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def format_interval(ci: Sequence[float] | None, digits: int = 1) -> str:
    """A 95% interval for a table, ``"[-2.0, -0.4]"``; ``"(n = 1)"`` where one seed gives
    none (:func:`paired_difference`'s ``ci95`` is then ``None``)."""
    if ci is None:
        return "(n = 1)"
    return f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def verdict(ci: Sequence[float] | None, *, higher_is_better: bool) -> str:
    """``"better"`` or ``"worse"`` when the 95% interval of a − b excludes 0 (by the metric's
    direction), ``"not separated"`` when it holds 0 or there is none."""
    if ci is None or ci[0] <= 0 <= ci[1]:
        return "not separated"
    above = ci[0] > 0
    return "better" if above == higher_is_better else "worse"
