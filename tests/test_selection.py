"""Choosing among candidates: successive halving against the full grid, on objectives whose
answer is known."""

from __future__ import annotations

import pytest

from uncertainty_mtl.experiments.benchmark.selection import Halving, choose, successive_halving


def test_the_schedule_of_the_cpu_preset_search():
    halving = Halving(eta=3, rungs=3)
    assert halving.steps(600) == [66, 200, 600]
    assert [halving.keep(n) for n in (24, 8, 3, 2, 1)] == [8, 3, 1, 1, 1]
    assert halving.sizes(24) == [24, 8, 3] and Halving(rungs=1).sizes(24) == [24]
    # 24 at 66, 8 at 200, 3 at 600: about a third of the full grid's 24 × 600
    assert halving.cost(24, 600) == 24 * 66 + 8 * 200 + 3 * 600 == 4984
    assert Halving(rungs=1).steps(600) == [600] and Halving(rungs=1).cost(24, 600) == 14400
    assert Halving(eta=3, rungs=3).steps(2) == [1, 1, 2]  # never fewer than one step
    with pytest.raises(ValueError, match="eta >= 2"):
        Halving(eta=1)


def _trainer(final_error, slowness, calls):
    """A candidate's error after ``steps``: its final error plus ``slowness / steps`` (every
    candidate improves with training, some faster than others); records each call."""

    def train(candidates, steps):
        calls.append((list(candidates), steps))
        return {
            c: {"depth_mean_error_px": final_error[c] + slowness[c] / steps} for c in candidates
        }

    return train


def test_halving_keeps_the_best_third_of_each_rung_and_finds_the_grids_choice():
    candidates = list(range(24))
    final_error = {c: 1.0 + ((7 * c) % 24) / 24 for c in candidates}  # best: c = 0, then 7, 14
    slowness = {c: 5.0 for c in candidates}  # the same for all: ranks agree at every length
    calls: list = []
    chosen, rungs = successive_halving(
        candidates,
        _trainer(final_error, slowness, calls),
        ["depth"],
        steps=600,
        halving=Halving(),
    )
    full, _ = choose(
        {c: {"depth_mean_error_px": final_error[c] + 5.0 / 600} for c in candidates}, ["depth"]
    )
    assert chosen == full == 0
    assert [(len(c), s) for c, s in calls] == [(24, 66), (8, 200), (3, 600)]
    by_error = sorted(candidates, key=final_error.__getitem__)
    assert rungs[0].kept == by_error[:8]
    assert calls[1][0] == by_error[:8] and calls[2][0] == by_error[:3]
    assert rungs[-1].kept == [0] and [r.steps for r in rungs] == [66, 200, 600]


def test_halving_drops_a_slow_starter_that_the_full_grid_would_choose():
    # Successive halving's known limit: a candidate that is worst after a ninth of the steps
    # but best at the end is dropped in the first rung (the full grid keeps it).
    candidates = list(range(6))
    final_error = {0: 0.5, 1: 1.0, 2: 1.1, 3: 1.2, 4: 1.3, 5: 1.4}
    slowness = {0: 30.0, **{c: 1.0 for c in range(1, 6)}}  # 0: 3.5 at 10 steps, 0.83 at 90
    calls: list = []
    chosen, _ = successive_halving(
        candidates, _trainer(final_error, slowness, calls), ["depth"], steps=90, halving=Halving()
    )
    grid, _ = successive_halving(
        candidates,
        _trainer(final_error, slowness, []),
        ["depth"],
        steps=90,
        halving=Halving(rungs=1),
    )
    assert grid == 0 and chosen == 1
    assert 0 not in calls[1][0]


def test_each_rung_normalises_over_its_own_candidates_with_several_tasks():
    # two tasks in different units: the criterion's min-max normalisation makes them count alike
    metrics = {
        "a": {"miou": 50.0, "depth_mean_error_px": 0.50},
        "b": {"miou": 40.0, "depth_mean_error_px": 0.10},
        "c": {"miou": 45.0, "depth_mean_error_px": 0.15},
        "d": {"miou": 10.0, "depth_mean_error_px": 0.90},
    }

    def train(candidates, steps):
        return {c: metrics[c] for c in candidates}

    chosen, rungs = successive_halving(
        list(metrics), train, ["semantic", "depth"], steps=4, halving=Halving(eta=2, rungs=2)
    )
    # rung 1 over all four, errors 100 − mIoU (range 40) and depth (range 0.8):
    # a (0 + 0.5)/2, b (0.25 + 0)/2, c (0.125 + 0.0625)/2, d 1 → keeps c, b
    assert rungs[0].scores == pytest.approx({"a": 0.25, "b": 0.125, "c": 0.09375, "d": 1.0})
    assert rungs[0].kept == ["c", "b"]
    # rung 2 over c and b only: c (0 + 1)/2, b (1 + 0)/2: a tie keeps the better of rung 1, c
    assert rungs[1].scores == {"c": 0.5, "b": 0.5} and chosen == "c"


def test_one_candidate_left_stops_the_search():
    calls: list = []
    chosen, rungs = successive_halving(
        ["x", "y"],
        _trainer({"x": 2.0, "y": 1.0}, {"x": 0.0, "y": 0.0}, calls),
        ["depth"],
        steps=27,
        halving=Halving(eta=3, rungs=4),
    )
    assert chosen == "y" and len(rungs) == 1 and calls == [(["x", "y"], 1)]
    with pytest.raises(ValueError, match="no candidates"):
        successive_halving([], _trainer({}, {}, []), ["depth"], steps=1, halving=Halving())


def test_a_study_names_its_search_and_refuses_an_unknown_one():
    from uncertainty_mtl.errors import ConfigError
    from uncertainty_mtl.experiments.paper.scene import SceneStudy

    assert SceneStudy("cpu").halving == Halving(eta=3, rungs=3)
    assert SceneStudy("cpu", search="grid").halving.steps(600) == [600]
    with pytest.raises(ConfigError, match=r"--search must be one of \['halving', 'grid'\]"):
        SceneStudy("cpu", search="random")
