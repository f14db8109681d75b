"""How a study chooses among candidates (a grid of fixed weights), for every study alike.

Choices are made on the selection split, never on the reported one (see ``runner.Run``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from uncertainty_mtl.tasks.registry import task_errors

__all__ = ["CANDIDATE_CRITERION", "choose"]

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
