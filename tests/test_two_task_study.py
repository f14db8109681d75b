"""The two-task study, end to end on tiny data, and its weight selection."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from uncertainty_mtl.cli import main
from uncertainty_mtl.data.mnist_like import write_idx
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments import two_task as runs
from uncertainty_mtl.experiments import two_task as study
from uncertainty_mtl.experiments.runner import SMOKE_NOTE

ROWS = {
    "classification_only",
    "reconstruction_only",
    "unweighted",
    "approx_optimal",
    "learned_likelihood",
    "learned_paper",
}
FIGURES = ("two_task.png", "two_task-log_variances.png", "two_task-test_curves.png")


def smoke(**changes):
    return replace(runs.smoke_config(runs.PRESETS["digits"]), **{"seeds": 2, **changes})


def test_smoke_study_writes_every_output_and_a_rerun_trains_nothing(tmp_path):
    config = smoke()
    first = study.run_study(config, tmp_path, progress=False)
    for name in ("config.yaml", "two_task.json", "two_task.md", *FIGURES):
        assert (tmp_path / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "two_task.json").read_text())
    assert set(results) >= {
        "study",
        "dataset",
        "split_sizes",
        "seeds",
        "config",
        "rows",
        "grid",
        "approx_optimal",
        "reference",
        "wall_time_s",
        "trained_runs",
    }
    assert set(results["rows"]) == ROWS
    assert results["trained_runs"] == 2 * 5  # 3 grid points + 2 learned rows, 2 seeds
    only = results["rows"]["classification_only"]["test"]
    assert set(only) == {"accuracy"} and only["accuracy"]["n"] == 2
    both = results["rows"]["learned_likelihood"]
    assert set(both["test"]) == {"accuracy", "reconstruction_l1"}
    assert set(both["final_log_variances"]) == {"classification", "reconstruction"}
    assert results["approx_optimal"]["weights"] == {"classification": 0.5, "reconstruction": 0.5}
    assert [g["weights"]["classification"] for g in results["grid"]] == [0.0, 0.5, 1.0]
    table = (tmp_path / "two_task.md").read_text()
    assert "| Classification only | 1, 0 |" in table and "89.7" in table
    assert table.startswith(SMOKE_NOTE)  # cut splits: the table says its numbers mean nothing

    (run,) = (tmp_path / "runs").glob("learned-likelihood-*/seed1")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {
        "step",
        "loss/classification",
        "log_var/reconstruction",
        "weight/classification",
        "lr",
    } <= set(records[0])
    result = json.loads((run / "results.json").read_text())
    # the scene runs' format: the reported split's metrics and the training's cost
    assert result["split"] == "test" and result["metrics"] == result["final"]["test"]
    training = result["training"]
    assert training["seconds"] > 0 and training["peak_memory_kind"] == "process_rss"
    assert result["history"][0]["step"] == 0 and result["history"][-1]["step"] == training["steps"]
    assert not list((tmp_path / "runs").rglob("result.json"))

    second = study.run_study(config, tmp_path, progress=False)
    assert second["trained_runs"] == 0
    assert second["rows"] == first["rows"]


def test_changed_config_retrains_instead_of_reusing_stale_runs(tmp_path):
    study.run_study(smoke(seeds=1), tmp_path, progress=False)
    again = study.run_study(smoke(seeds=1, lr=1e-3), tmp_path, progress=False)
    assert again["trained_runs"] == 5


def test_seeded_runs_repeat_exactly(tmp_path):
    config = smoke(seeds=1)
    run = runs.TwoTaskStudy(config).resolve(runs.learned_run("likelihood"))
    a = runs.train_run(run, tmp_path / "a")
    b = runs.train_run(run, tmp_path / "b")
    assert a["final"] == b["final"] and a["log_variances"] == b["log_variances"]


def _grid_point(w, val_acc, val_l1, test_acc, test_l1):
    point = {"weights": {"classification": w, "reconstruction": 1 - w}}
    for split, acc, l1 in (("val", val_acc, val_l1), ("test", test_acc, test_l1)):
        point[split] = {"accuracy": {"mean": acc}, "reconstruction_l1": {"mean": l1}}
    return point


def test_weight_selection_reads_the_validation_split_only():
    grid = [
        _grid_point(0.25, val_acc=90, val_l1=0.10, test_acc=99, test_l1=0.01),
        _grid_point(0.50, val_acc=95, val_l1=0.08, test_acc=80, test_l1=0.50),
        _grid_point(0.75, val_acc=96, val_l1=0.20, test_acc=80, test_l1=0.50),
    ]
    chosen, scores = study.select_weight(grid)
    # Normalised errors: 0.25 -> (1, 0.167), 0.5 -> (0.167, 0), 0.75 -> (0, 1).
    assert chosen == 0.5
    assert scores == pytest.approx({"0.25": (1 + 1 / 6) / 2, "0.50": (1 / 6) / 2, "0.75": 0.5})
    # Single-task ends of the grid are never chosen as "multi-task" weights.
    assert study.select_weight([_grid_point(1.0, 99, 0.0, 99, 0.0)]) == (None, {})


def test_fashion_mnist_study_on_idx_files_through_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "fmnist"
    data.mkdir()
    for prefix, n in (("train", 72), ("t10k", 24)):
        write_idx(
            data / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    out = tmp_path / "out"
    code = main(
        [
            "reproduce",
            "two-task",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(data),
            "--preset",
            "smoke",
            "--seeds",
            "1",
            "--workers",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "two_task.json").read_text())
    assert results["dataset"] == "fashion-mnist" and results["image_size"] == 28
    assert "Two-task study on fashion-mnist" in capsys.readouterr().out


def test_cli_errors_are_clear_and_write_nothing(tmp_path, capsys, monkeypatch):
    import uncertainty_mtl.data.mnist_like as mnist_like

    # a machine without Debian's package: the message gives both ways to get the files
    monkeypatch.setattr(mnist_like, "FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    out = tmp_path / "out"
    code = main(["reproduce", "two-task", "--dataset", "fashion-mnist", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "no --data-dir was given" in err and "\n" not in err
    assert "apt-get install dataset-fashion-mnist" in err and "zalandoresearch" in err
    assert not out.exists()
    code = main(
        [
            "reproduce",
            "two-task",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path / "missing"),
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_two_workers_give_the_same_numbers_as_one(tmp_path):
    config = smoke(seeds=1, grid=(0.0, 1.0))
    serial = study.run_study(config, tmp_path / "serial", workers=1, progress=False)
    parallel = study.run_study(config, tmp_path / "parallel", workers=2, progress=False)
    for row, entry in serial["rows"].items():
        for metric, summary in entry["test"].items():
            assert parallel["rows"][row]["test"][metric]["mean"] == pytest.approx(
                summary["mean"], rel=1e-4
            ), (row, metric)


def test_a_run_names_its_method_as_every_study_does_and_keeps_its_directory():
    config = smoke()
    two_task_study = runs.TwoTaskStudy(config)
    fixed = two_task_study.resolve(runs.fixed_run(0.5))
    assert fixed.weighting.kind == "fixed" and fixed.weighting.weights["classification"] == 0.5
    # the identity (the directory's hash) of a run from before the one vocabulary, by hand
    assert two_task_study.identity(fixed) == {
        "dataset": "digits",
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "weighting_lr": None,
        "init_log_var": 0.0,
        "eval_every": config.eval_every,
        "log_every": config.log_every,
        "max_train": config.max_train,
        "max_eval": config.max_eval,
        "weights": {"classification": 0.5, "reconstruction": 0.5},
        "convention": None,
    }
    dwa = two_task_study.identity(two_task_study.resolve(runs.method_run("dwa")))
    assert dwa["method"] == "dwa" and dwa["weights"] is None and "weighting" not in dwa
    # an option away from its default is part of what the run is
    tempered = runs.method_run("dwa").with_patch("dwa-t5", **{"weighting.dwa.temperature": 5.0})
    changed = two_task_study.identity(two_task_study.resolve(tempered))
    assert changed["weighting"] == {"dwa": {"temperature": 5.0}}
    assert two_task_study.resolve(tempered).make_weighting().temperature == 5.0
    with pytest.raises(ValueError, match="method must be one of"):
        runs.method_run("fixed")
    typo = runs.method_run("dwa").with_patch("typo", **{"weighting.temprature": 5.0})
    with pytest.raises(ConfigError, match=r"weighting: unknown key\(s\) \['temprature'\]"):
        two_task_study.resolve(typo)


def test_two_task_loop_calls_every_weighting_hook(tmp_path, monkeypatch):
    """DWA gets one on_epoch call per epoch, GradNorm its task gradients and its own step, an
    aggregator the shared code for its backward: each moves its weights off the start."""
    from uncertainty_mtl.weighting import DynamicWeightAverage

    config = smoke(epochs=3)
    two_task_study = runs.TwoTaskStudy(config)
    epochs: list[int] = []
    original = DynamicWeightAverage.on_epoch

    def spy(self, epoch):
        epochs.append(epoch)
        original(self, epoch)

    monkeypatch.setattr(DynamicWeightAverage, "on_epoch", spy)
    moved = {}
    for method in ("dwa", "gradnorm", "mgda"):
        result = runs.train_run(two_task_study.resolve(runs.method_run(method)), tmp_path / method)
        assert result["method"] == method and result["training"]["seconds"] > 0
        weights = result["effective_weights"]
        moved[method] = max(abs(w - 1.0) for w in weights.values())
    assert epochs == [0, 1, 2]
    assert all(value > 1e-4 for value in moved.values()), moved


def test_methods_on_the_two_task_study_share_its_rows_and_compute_delta_m(
    tmp_path, monkeypatch, capsys
):
    from uncertainty_mtl.experiments.benchmark import methods_two_task

    rows = ("equal", "uncertainty", "approx-optimal", "mgda")
    monkeypatch.setattr(methods_two_task, "EVERY_METHOD", rows)
    code = main(
        [
            "reproduce", "methods", "--dataset", "digits", "--preset", "smoke", "--seeds", "1",
            "--out", str(tmp_path), "--workers", "1", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "methods.json").read_text())
    study_rows = json.loads((tmp_path / "two_task.json").read_text())["rows"]
    rows = summary["rows"]
    assert list(rows) == ["equal", "uncertainty", "approx-optimal", "mgda"]
    assert rows["uncertainty"]["runs"][0].startswith(str(tmp_path / "runs" / "learned-likelihood"))
    chosen = study_rows["approx_optimal"]["run_id"]
    assert rows["approx-optimal"]["runs"][0].startswith(str(tmp_path / "runs" / chosen))
    assert rows["equal"]["cost_vs_equal"] == 1.0 and rows["mgda"]["kind"] == "aggregator"
    single_acc = study_rows["classification_only"]["test"]["accuracy"]["mean"]
    single_l1 = study_rows["reconstruction_only"]["test"]["reconstruction_l1"]["mean"]
    for method, row in rows.items():
        test = json.loads((tmp_path / row["runs"][0] / "results.json").read_text())["metrics"]
        by_hand = (
            -(test["accuracy"] - single_acc) / single_acc
            + (test["reconstruction_l1"] - single_l1) / single_l1
        ) * 50
        assert row["delta_m"]["values"][0] == pytest.approx(by_hand, rel=1e-9), method
    # the training time is summed from the runs the table used, the single-task ones included
    used = {run for row in rows.values() for run in row["runs"]}
    used |= {str(d) for d in (tmp_path / "runs").glob("fixed-[01].00-*/seed0")}
    seconds = [
        json.loads((Path(r) / "results.json").read_text())["training"]["seconds"] for r in used
    ]
    assert len(used) == 6 and summary["training_time_s"] == pytest.approx(sum(seconds))
    # what a reader needs to tell a direction from a step size, and to rank two rows
    assert summary["protocol"] == "fixed-lr" and summary["optimiser"] == "adam"
    assert {row["lr"] for row in rows.values()} == {runs.smoke_config(runs.PRESETS["digits"]).lr}
    assert rows["equal"]["update_norm_vs_equal"] == pytest.approx(1.0, rel=1e-6)
    assert rows["equal"]["effective_weights"]["final"] == {
        "classification": 1.0,
        "reconstruction": 1.0,
    }
    learned = rows["uncertainty"]["effective_weights"]
    assert learned["final"] != learned["mean"] and rows["mgda"]["update_norm_vs_equal"] < 1.0
    paired = rows["uncertainty"]["paired"]
    assert set(paired) == {"equal", "approx-optimal"}  # never against itself
    assert paired["equal"]["delta_m"]["mean"] == pytest.approx(
        rows["uncertainty"]["delta_m"]["values"][0] - rows["equal"]["delta_m"]["values"][0]
    )
    # per task the 4 rows hold the ranks 1..4 (ties share theirs): the means sum to 10
    assert sum(row["mean_rank"] for row in rows.values()) == pytest.approx(10.0)
    assert rows["equal"]["delta_m_all_pairs"]["values"] == rows["equal"]["delta_m"]["values"]
    assert (tmp_path / "methods.png").read_bytes()[:4] == b"\x89PNG"
    assert "| mgda |" in (tmp_path / "methods.md").read_text()
    assert "| mgda |" in capsys.readouterr().out
    # the step cost is measured alone, not read from the runs; weights and Spearman are reported
    assert all(row["step_seconds"] > 0 for row in rows.values())
    assert summary["weight_sum_spearman"]["rows"] == 3  # the loss weightings
    assert "| equal | " in (tmp_path / "methods.md").read_text()
    assert "1, 1 |" in (tmp_path / "methods.md").read_text()  # equal's final weights


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "paper"], "--preset paper is the scene study's"),
        (["--set", "optim.lr=1"], "--set is for the scene study"),
    ],
)
def test_methods_on_digits_refuse_scene_options(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code = main(["reproduce", "methods", "--dataset", "digits", "--out", str(out), *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_the_old_smoke_spelling_still_works_and_says_the_new_one(capsys):
    from uncertainty_mtl.cli import _build_parser, _two_task_config

    parse = _build_parser().parse_args
    new = _two_task_config(parse(["reproduce", "two-task", "--preset", "smoke"]))
    assert capsys.readouterr().err == ""
    old = _two_task_config(parse(["reproduce", "two-task", "--smoke"]))
    assert "now spelled --preset smoke" in capsys.readouterr().err
    plain = _two_task_config(parse(["reproduce", "two-task"]))
    assert new == old != plain and new.epochs == 2 and plain.epochs == 100
    # the study's old name: the same study, and a line that gives the new one
    renamed = _two_task_config(parse(["reproduce", "fashion-mnist", "--preset", "smoke"]))
    err = capsys.readouterr().err
    assert renamed == new and "is now `reproduce two-task`" in err and "here digits" in err


@pytest.mark.parametrize("method", ["likelihood", "dwa", "nash-mtl", "gradvac", "db-mtl"])
def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_run(method, killed_and_resumed):
    """4 steps an epoch, a checkpoint each: killed after step 6, the run resumes from step 4
    (DWA's epoch statistics, Nash-MTL's warm start, GradVac's and DB-MTL's running averages and
    the batch order included)."""
    config = smoke(seeds=1, epochs=3)
    row = runs.learned_run(method) if method == "likelihood" else runs.method_run(method)
    run = runs.TwoTaskStudy(config).resolve(row)
    from uncertainty_mtl.experiments.runner import loop_job

    job = functools.partial(loop_job, runs.TwoTaskLoop)  # what the study's executor calls
    result = killed_and_resumed("two-task", run, job, kill_at=6)
    # the training time counts both sessions, each up to its last checkpoint
    assert result["training"]["seconds"] > result["training"]["seconds_this_session"]
