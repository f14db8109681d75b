"""The two-task study, end to end on tiny data, and its weight selection."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from uncertainty_mtl.cli import main
from uncertainty_mtl.data.mnist_like import write_idx
from uncertainty_mtl.experiments import two_task as study
from uncertainty_mtl.experiments import two_task_runs as runs

ROWS = {
    "classification_only",
    "reconstruction_only",
    "unweighted",
    "approx_optimal",
    "learned_likelihood",
    "learned_paper",
}
FIGURES = ("fig_log_variances.png", "fig_grid_search.png", "fig_test_curves.png")


def smoke(**changes):
    return replace(runs.smoke_config(runs.PRESETS["digits"]), **{"seeds": 2, **changes})


def test_smoke_study_writes_every_output_and_a_rerun_trains_nothing(tmp_path):
    config = smoke()
    first = study.run_study(config, tmp_path, progress=False)
    for name in ("config.yaml", "results.json", "table.md", *FIGURES):
        assert (tmp_path / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "results.json").read_text())
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
    table = (tmp_path / "table.md").read_text()
    assert "| Classification only | 1, 0 |" in table and "89.7" in table

    (run,) = (tmp_path / "runs").glob("learned-likelihood-*/seed1")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {
        "step",
        "loss/classification",
        "log_var/reconstruction",
        "weight/classification",
        "lr",
    } <= set(records[0])
    result = json.loads((run / "result.json").read_text())
    assert result["history"][0]["step"] == 0 and result["history"][-1]["step"] == result["steps"]

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
            "fashion-mnist",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(data),
            "--smoke",
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
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "fashion-mnist" and results["image_size"] == 28
    assert "Two-task study on fashion-mnist" in capsys.readouterr().out


def test_cli_errors_are_clear_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["reproduce", "fashion-mnist", "--dataset", "fashion-mnist", "--out", str(out)])
    assert code == 2
    assert "needs data_dir (--data-dir)" in capsys.readouterr().err
    assert not out.exists()
    code = main(
        [
            "reproduce",
            "fashion-mnist",
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
