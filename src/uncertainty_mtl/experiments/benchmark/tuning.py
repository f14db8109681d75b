"""The tuned protocol's learning-rate search (``umtl reproduce methods --protocol tuned``): every
row of a methods table, the single-task references included, gets the same search on the
selection split, so that a table ranks methods rather than the step size one learning rate
happens to suit.

The search (:class:`LrSearch`): a grid of factor-2 steps around the preset's rate, searched by
successive halving (every rate trained briefly, the better ones in full); when the choice is on
the grid's edge, the next factor-2 step beyond it is trained in full and compared, up to
``extensions`` times, so that the grid's span never decides the result. Full-length runs are
compared on the mean of ``full_seeds`` seeds' selection metrics: on digits, one seed chose a rate
at which the reconstruction-only model's decoder collapsed in 3 of 5 seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from uncertainty_mtl.experiments.benchmark.selection import Halving, choose, successive_halving

__all__ = ["LR_FACTORS", "LrSearch", "tune_lr"]

#: The grid's factors on the preset's learning rate.
LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class LrSearch:
    """The search every row gets.

    Attributes:
        factors: the grid, as factors on the base rate (sorted, factor-2 steps).
        halving: successive halving over the grid (the first rung's runs are shorter).
        extensions: factor-2 steps past an edge of the grid, at most.
        full_seeds: full-length runs are scored by the mean of this many seeds' selection
            metrics (seeds 0, 1, ...; the shorter first rungs by seed 0's).
    """

    factors: tuple[float, ...] = LR_FACTORS
    halving: Halving = field(default_factory=lambda: Halving(eta=3, rungs=2))
    extensions: int = 2
    full_seeds: int = 2

    def __post_init__(self) -> None:
        if not self.factors or any(f <= 0 for f in self.factors):
            raise ValueError(f"LrSearch: factors must be > 0, got {self.factors}")
        if self.extensions < 0:
            raise ValueError(f"LrSearch: extensions must be >= 0, got {self.extensions}")
        if self.full_seeds < 1:
            raise ValueError(f"LrSearch: full_seeds must be >= 1, got {self.full_seeds}")

    def seeds(self, steps: int, full: int) -> range:
        """The seeds a run of ``steps`` (of a full length ``full``) trains and is scored on."""
        return range(self.full_seeds if steps == full else 1)

    def grid(self, base: float) -> list[float]:
        """The rates tried first."""
        return sorted(_round(base * f) for f in self.factors)

    def budget(self, full: int) -> int:
        """Training steps (or epochs) of one row's search without extensions, every seed's."""
        sizes, steps = self.halving.sizes(len(self.factors)), self.halving.steps(full)
        return sum(n * s * len(self.seeds(s, full)) for n, s in zip(sizes, steps, strict=True))


def _round(lr: float) -> float:
    return float(f"{lr:.6g}")  # 0.1 * 0.5 * 2 is 0.1, and a run's name says so


def tune_lr(
    base: float,
    train: Callable[[Sequence[float], int], Mapping[float, Mapping[str, Any]]],
    tasks: Sequence[str],
    *,
    steps: int,
    search: LrSearch,
) -> tuple[float, dict[str, Any]]:
    """Chooses a row's learning rate.

    Args:
        base: the preset's rate (the grid's centre).
        train: ``train(rates, steps)`` trains the row at each rate for ``steps``, on the seeds
            of ``search.seeds(steps, full)``, and returns its metrics on the selection split,
            the mean over those seeds (one call per rung or extension).
        tasks: the tasks whose errors count (``selection.CANDIDATE_CRITERION``).
        steps: a full run's length.
        search: the grid and its schedule.

    Returns:
        The chosen rate and the search's record: ``grid`` (every rate tried), ``rungs``
        (steps, each rate's score, the kept ones), ``extensions`` and ``chosen``.
    """
    grid = search.grid(base)
    chosen, rungs = successive_halving(grid, train, tasks, steps=steps, halving=search.halving)
    record: dict[str, Any] = {
        "rungs": [
            {"steps": r.steps, "scores": {str(k): v for k, v in r.scores.items()}} for r in rungs
        ],
        "extensions": [],
    }
    for _ in range(search.extensions):
        if chosen not in (grid[0], grid[-1]):
            break
        beyond = _round(chosen * 2 if chosen == grid[-1] else chosen / 2)
        grid = sorted([*grid, beyond])
        winner, scores = choose(train([chosen, beyond], steps), tasks)
        record["extensions"].append(
            {"lr": beyond, "scores": {str(k): v for k, v in scores.items()}}
        )
        if winner == chosen:
            break
        chosen = winner
    record.update(grid=grid, chosen=chosen)
    return chosen, record
