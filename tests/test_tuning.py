"""The tuned protocol's learning-rate search, against a score whose best rate is known, and the
tuned methods table on the digits study's smoke preset."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from uncertainty_mtl.cli import main
from uncertainty_mtl.experiments.benchmark.methods_tuned import weight_sum_spearman
from uncertainty_mtl.experiments.benchmark.tuning import LrSearch, tune_lr


def peaked_at(best: float, calls: list[tuple[tuple[float, ...], int]]):
    """A ``train`` whose accuracy peaks at ``best`` (falls by 1 point a factor 2 away)."""

    def train(rates, steps):
        calls.append((tuple(rates), steps))
        return {lr: {"accuracy": 90.0 - math.log2(lr / best) ** 2} for lr in rates}

    return train


def test_the_search_finds_an_inner_optimum_by_halving_the_grid():
    calls: list = []
    chosen, record = tune_lr(
        0.1, peaked_at(0.2, calls), ["classification"], steps=30, search=LrSearch()
    )
    assert chosen == 0.2 and record["extensions"] == []
    # the first rung trains the 5 rates at a third of the steps, the second the best 2 in full
    assert calls == [((0.025, 0.05, 0.1, 0.2, 0.4), 10), ((0.2, 0.1), 30)]
    assert record["grid"] == [0.025, 0.05, 0.1, 0.2, 0.4] and record["chosen"] == 0.2
    # full-length runs train seeds 0 and 1 (the callback's part); the budget counts both
    assert LrSearch().budget(30) == 5 * 10 + 2 * 30 * 2
    assert list(LrSearch().seeds(10, 30)) == [0] and list(LrSearch().seeds(30, 30)) == [0, 1]
    assert LrSearch(full_seeds=1).budget(30) == 5 * 10 + 2 * 30


@pytest.mark.parametrize(
    ("best", "chosen", "tried"),
    [
        (1.6, 1.6, [0.8, 1.6]),  # two steps past the edge 0.4: found
        (100.0, 1.6, [0.8, 1.6]),  # further away: the search stops after two extensions
        (0.004, 0.00625, [0.0125, 0.00625]),  # the low edge extends downwards
    ],
)
def test_a_choice_on_the_edge_extends_the_grid(best, chosen, tried):
    calls: list = []
    found, record = tune_lr(
        0.1, peaked_at(best, calls), ["classification"], steps=30, search=LrSearch()
    )
    assert found == chosen
    assert [e["lr"] for e in record["extensions"]] == tried
    # each extension trains the edge (a run already trained in full) and the next rate, in full
    assert [steps for _, steps in calls[2:]] == [30] * len(tried)


def test_no_extension_when_the_search_is_told_so():
    found, record = tune_lr(
        0.1, peaked_at(100.0, []), ["classification"], steps=9, search=LrSearch(extensions=0)
    )
    assert found == 0.4 and record["extensions"] == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--protocol", "tuned", "--preset", "paper", "--data", "x"], "--preset paper has none"),
        (["--optimiser", "adam"], "--optimiser picks an arm of --protocol tuned"),
        (["--protocol", "tuned", "--dataset", "digits", "--optimiser", "sgd"], "trains with adam"),
        (["--dataset", "digits", "--preset", "cpu-lite"], "--preset cpu-lite: digits has"),
    ],
)
def test_bad_methods_arguments_fail_in_one_line_before_anything_is_written(
    tmp_path, capsys, argv, says
):
    out = tmp_path / "out"
    assert main(["reproduce", "methods", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and not out.exists()


def test_the_tuned_table_on_digits_gives_every_row_its_own_rate(tmp_path, monkeypatch):
    from uncertainty_mtl.experiments.benchmark import methods, methods_two_task

    rows = ("equal", "uncertainty", "approx-optimal", "si", "mgda")
    assert set(rows) < set(methods.EVERY_METHOD)  # si: a row of the tuned tables only
    assert "si" not in methods.METHODS
    monkeypatch.setattr(methods_two_task, "EVERY_METHOD", rows)
    argv = [
        "reproduce", "methods", "--dataset", "digits", "--preset", "smoke", "--seeds", "2",
        "--protocol", "tuned", "--out", str(tmp_path), "--workers", "1", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((tmp_path / "methods-tuned.json").read_text())
    assert summary["protocol"] == "tuned" and summary["seeds"] == [0, 1]
    assert "two_task.cost.step_costs" in summary["step_cost"]["how"]
    rows, searches = summary["rows"], summary["searches"]
    assert list(rows) == ["equal", "uncertainty", "approx-optimal", "si", "mgda"]
    assert set(searches) == {"classification-only", "reconstruction-only", *rows}
    for name, row in rows.items():
        search = searches[name]
        assert row["lr"] == search["chosen"] and row["lr"] in search["grid"]
        # seed 0's reported run is the search's full-length run at the chosen rate
        seed0 = json.loads((tmp_path / row["runs"][0] / "results.json").read_text())
        assert seed0["seed"] == 0 and len(row["runs"]) == 2
        assert row["delta_m"]["n"] == 2 and row["delta_m_all_pairs"]["n"] == 4
    # the last rung compared its two rates on seeds 0 and 1: both seeds of both were trained
    last = searches["equal"]["rungs"][-1]["scores"]
    for lr in last:
        name = re.compile(rf"method-equal-lr{float(lr):g}-[0-9a-f]{{8}}")  # not a first rung's
        full = [d for d in (tmp_path / "runs").iterdir() if name.fullmatch(d.name)]
        assert len(full) == 1  # the full-length runs at that rate (not the first rung's)
        seeds = sorted(f.parent.name for f in full[0].glob("seed*/results.json"))
        assert seeds[:2] == ["seed0", "seed1"]
    single = summary["single_task"]
    for name in ("classification-only", "reconstruction-only"):
        assert single[name]["lr"] == searches[name]["chosen"]
    paired = rows["mgda"]["paired"]["equal"]["delta_m"]
    mgda, equal = rows["mgda"]["delta_m"]["values"], rows["equal"]["delta_m"]["values"]
    assert paired["mean"] == pytest.approx(sum(a - b for a, b in zip(mgda, equal, strict=True)) / 2)
    assert "| mgda |" in (tmp_path / "methods-tuned.md").read_text()
    # the step cost is measured, equal's is the unit, and the figure is written
    assert rows["equal"]["cost_vs_equal"] == 1.0
    assert all(row["step_seconds"] > 0 for row in rows.values())
    assert (tmp_path / "methods-tuned.png").stat().st_size > 0
    assert summary["weight_sum_spearman"]["rows"] == 4  # the loss weightings, approx.-opt. too


def test_weight_sum_spearman_ranks_the_loss_weightings_only():
    def row(kind, weights, delta):
        final = None if weights is None else {"final": dict(enumerate(weights))}
        return {"kind": kind, "effective_weights": final, "delta_m": {"mean": delta}}

    rows = {
        "a": row("loss weighting", (1, 1), 5.0),
        "b": row("loss weighting", (2, 2), 3.0),
        "c": row("loss weighting", (4, 1), 4.0),  # sums 2, 4, 5 against Δm 5, 3, 4
        "d": row("aggregator", (9, 9), 9.0),
        "e": row("loss weighting", None, 0.0),
    }
    found = weight_sum_spearman(rows)
    assert found == {"rho": pytest.approx(-0.5), "rows": 3}
    assert weight_sum_spearman({"a": rows["a"], "b": rows["b"]}) is None


def test_step_costs_time_every_run_in_turns_with_the_threads_restored(monkeypatch):
    from types import SimpleNamespace

    from uncertainty_mtl.engine import cost as timing
    from uncertainty_mtl.experiments.two_task import cost

    calls, clock = [], [0.0]
    seconds = {"run-equal": 0.5, "run-y": 1.5}  # what one step of each takes, on a fake clock

    def fake_step(run):
        def step():
            calls.append(run)
            clock[0] += seconds[run]

        return step

    monkeypatch.setattr(cost, "_step", fake_step)
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    before = torch.get_num_threads()
    found = cost.step_costs({"equal": "run-equal", "y": "run-y"}, rounds=2, per_block=3)
    assert found == {
        "equal": {"step_seconds": 0.5, "cost_vs_equal": 1.0},
        "y": {"step_seconds": 1.5, "cost_vs_equal": 3.0},
    }
    # warm-up 3 each, then rounds alternate: equal's block, y's block, equal's, y's
    assert calls == ["run-equal"] * 3 + ["run-y"] * 3 + (["run-equal"] * 3 + ["run-y"] * 3) * 2
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("method", ["gradnorm", "nash-mtl"])
def test_a_timed_step_is_a_real_step_on_changing_batches(method, monkeypatch):
    from uncertainty_mtl.experiments import two_task
    from uncertainty_mtl.experiments.two_task import cost

    built, seen, original, train_step = [], [], cost.build_training, cost.train_step

    def build(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    def step(*args, **kwargs):
        seen.append(args[4])  # the images
        return train_step(*args, **kwargs)

    monkeypatch.setattr(cost, "build_training", build)
    monkeypatch.setattr(cost, "train_step", step)
    study = two_task.TwoTaskStudy(two_task.preset_config("digits"), "cpu")
    run = study.resolve(two_task.method_run(method), parallel=False)
    timed = cost._step(run, batches=2)
    ((model, _, optimiser),) = built
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        timed()
    assert optimiser.param_groups[0]["lr"] == run.lr  # the run's own rate
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert seen[0] is seen[2] and not torch.equal(seen[0], seen[1])  # a cycle of 2 batches


def test_table_agreement_by_hand():
    from uncertainty_mtl.experiments.benchmark.methods_stats import table_agreement

    def table(**rows):
        return {
            "rows": {n: {"delta_m": {"mean": sum(v) / 3, "values": v}} for n, v in rows.items()}
        }

    first = table(
        equal=[5.0, 6.0, 7.0],
        a=[1.0, 2.0, 3.0],  # 4 below equal every seed: better
        b=[5.5, 5.5, 8.5],  # differences +0.5, -0.5, +1.5: not separated
        c=[9.0, 10.0, 11.0],  # worse
    )
    second = table(
        equal=[5.0, 6.0, 7.0],
        a=[6.0, 7.0, 8.0],  # worse here
        b=[1.0, 2.0, 3.0],  # better here
        c=[9.0, 10.0, 11.0],  # worse
        d=[0.0, 0.0, 0.0],  # not in the first table: left out
    )
    found = table_agreement(first, second)
    assert found["rows"] == ["equal", "a", "b", "c"]
    # ranks of the means: first (equal 2, a 1, b 3, c 4), second (equal 2, a 3, b 1, c 4)
    # d² = 0 + 4 + 4 + 0 = 8: rho = 1 - 6·8 / (4·15) = 0.2
    assert found["spearman"] == pytest.approx(0.2)
    assert found["verdicts_vs_equal"] == {
        "a": ["better", "worse"],
        "b": ["not separated", "better"],
        "c": ["worse", "worse"],
    }
    assert found["same_verdict"] == 1
    with pytest.raises(ValueError, match="3 shared rows"):
        table_agreement(first, table(equal=[1.0, 2.0, 3.0], a=[1.0, 1.0, 1.0]))


@pytest.mark.parametrize("kind", ["gradnorm", "nash-mtl", "uncertainty"])
def test_a_timed_city_step_is_the_trainers_update_on_changing_batches(kind, monkeypatch):
    from uncertainty_mtl.config import load_config
    from uncertainty_mtl.experiments.paper import scene_cost

    built, seen, original, update = [], [], scene_cost.build_optimiser, scene_cost.update

    def optimiser(config, model, weighting):
        built.append((model, weighting, original(config, model, weighting)))
        return built[-1][2]

    def step(*args, **kwargs):
        seen.append(args[5])  # the task losses
        return update(*args, **kwargs)

    monkeypatch.setattr(scene_cost, "build_optimiser", optimiser)
    monkeypatch.setattr(scene_cost, "update", step)
    config = load_config("smoke", [f"weighting.kind={kind}", "optim.optimizer=adam"])
    timed = scene_cost._step(config, batches=2)
    ((model, weighting, adam),) = built
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == config.optim.lr
    before = [p.detach().clone() for p in [*model.parameters(), *weighting.parameters()]]
    for _ in range(3):
        timed()
    after = [*model.parameters(), *weighting.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    losses = [float(sum(s.values()).detach()) for s in seen]  # batches 0, 1, 0
    assert losses[0] != losses[1] and len(seen) == 3


def test_random_batches_have_every_tasks_targets_in_the_pipelines_shapes():
    from uncertainty_mtl.experiments.paper.scene_cost import random_batch

    images, targets = random_batch(["semantic", "instance", "depth"], 2, 8, 16, seed=1)
    assert images.shape == (2, 3, 8, 16)
    assert targets["semantic"].shape == (2, 8, 16) and targets["semantic"].max() < 19
    assert targets["instance_offset"].shape == (2, 2, 8, 16)
    assert targets["depth_mask"].dtype == torch.bool
    again, _ = random_batch(["semantic"], 2, 8, 16, seed=1)
    assert torch.equal(images, again)  # seeded


def test_the_timed_input_is_the_crop_else_the_resize_else_the_frame():
    from uncertainty_mtl.config import load_config
    from uncertainty_mtl.experiments.paper.scene_cost import input_size

    assert input_size(load_config("smoke")) == (32, 64)  # the synthetic city's frames
    assert input_size(load_config("smoke", ["data.size=[16,32]"])) == (16, 32)
    assert input_size(load_config("smoke", ["data.size=[16,32]", "data.crop=[8,8]"])) == (8, 8)
    assert input_size(load_config("paper/tiny-cityscapes/three-task")) == (128, 256)
