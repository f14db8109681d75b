"""How a study chooses among candidates (a grid of fixed weights, of learning rates), for every
study alike: by one criterion, over every candidate trained in full (:func:`choose`) or by
successive halving (:func:`successive_halving`), which trains every candidate briefly and only
the better ones longer.

Choices are made on the selection split, never on the reported one (see ``runner.Run``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from uncertainty_mtl.tasks.registry import task_errors

__all__ = ["CANDIDATE_CRITERION", "Halving", "Rung", "choose", "successive_halving"]

K = TypeVar("K", bound=Hashable)

CANDIDATE_CRITERION = (
    "each task's error on the selection split (100 − accuracy or mIoU for percentages, the error "
    "itself otherwise) is min-max normalised over the candidates; the candidate with the lowest "
    "mean of them is chosen"
)


def choose(
    candidates: Mapping[K, Mapping[str, Any]], tasks: Sequence[str]
) -> tuple[K, dict[K, float]]:
    """Applies :data:`CANDIDATE_CRITERION`.

    Args:
        candidates: candidate -> its metrics on the selection split (means over seeds, or one
            seed's).
        tasks: the tasks whose errors count.

    Returns:
        The chosen candidate and every candidate's score.
    """
    if not candidates:
        raise ValueError("choose: no candidates")
    keys = list(candidates)
    errors = [task_errors(candidates[k], tasks) for k in keys]
    normalised = []
    for task in tasks:
        values = np.array([e[task] for e in errors])
        span = values.max() - values.min()
        normalised.append((values - values.min()) / span if span > 0 else np.zeros(len(keys)))
    scores = np.mean(normalised, axis=0)
    return keys[int(np.argmin(scores))], dict(zip(keys, scores.tolist(), strict=True))


@dataclass(frozen=True)
class Halving:
    """Successive halving's schedule (Jamieson & Talwalkar 2016; Li et al. 2018): ``rungs``
    rounds; the first trains every candidate for ``steps / eta**(rungs - 1)`` steps, each next
    one trains the best ``1/eta`` of the previous one's (rounded up) for ``eta`` times the steps,
    the last for the full ``steps``. Every rung is chosen by :data:`CANDIDATE_CRITERION` over its
    own candidates."""

    eta: int = 3
    rungs: int = 3

    def __post_init__(self) -> None:
        if self.eta < 2 or self.rungs < 1:
            raise ValueError(f"halving needs eta >= 2 and rungs >= 1, got {self}")

    def steps(self, full: int) -> list[int]:
        """Each rung's training steps for a full length of ``full``."""
        return [max(1, full // self.eta ** (self.rungs - 1 - i)) for i in range(self.rungs)]

    def keep(self, n: int) -> int:
        """How many of ``n`` candidates go on to the next rung."""
        return max(1, math.ceil(n / self.eta))

    def sizes(self, candidates: int) -> list[int]:
        """How many candidates each rung trains, when the search reaches its last rung."""
        sizes = [candidates]
        for _ in range(self.rungs - 1):
            sizes.append(self.keep(sizes[-1]))
        return sizes

    def cost(self, candidates: int, full: int) -> int:
        """Training steps of the whole search over ``candidates`` (against
        ``candidates * full`` for the full grid)."""
        pairs = zip(self.sizes(candidates), self.steps(full), strict=True)
        return sum(n * steps for n, steps in pairs)


@dataclass
class Rung(Generic[K]):
    """One round of a search: its steps, every candidate's score there, the ones kept."""

    steps: int
    scores: dict[K, float] = field(default_factory=dict)
    kept: list[K] = field(default_factory=list)


def successive_halving(
    candidates: Sequence[K],
    train: Callable[[Sequence[K], int], Mapping[K, Mapping[str, Any]]],
    tasks: Sequence[str],
    *,
    steps: int,
    halving: Halving,
) -> tuple[K, list[Rung[K]]]:
    """Chooses among ``candidates`` by successive halving.

    Args:
        candidates: what is chosen among (in a fixed order: it breaks ties).
        train: ``train(candidates, steps)`` trains each for ``steps`` and returns its metrics on
            the selection split (one call per rung, so a runner can train a rung side by side).
        tasks: the tasks whose errors count.
        steps: the last rung's steps (a full selection run's).
        halving: the schedule.

    Returns:
        The chosen candidate and the rungs, first to last; the last keeps only the choice.
    """
    if not candidates:
        raise ValueError("successive_halving: no candidates")
    alive = list(candidates)
    rungs: list[Rung[K]] = []
    schedule = halving.steps(steps)
    for i, rung_steps in enumerate(schedule):
        metrics = train(alive, rung_steps)
        chosen, scores = choose({k: metrics[k] for k in alive}, tasks)
        if i == len(schedule) - 1:
            kept = [chosen]
        else:  # sorted() is stable: a tie keeps the earlier candidate, as choose() does
            kept = sorted(alive, key=scores.__getitem__)[: halving.keep(len(alive))]
        rungs.append(Rung(rung_steps, scores, kept))
        alive = kept
        if len(alive) == 1:  # nothing left to compare at more steps
            break
    return alive[0], rungs
