"""The reproduction commands on the smoke preset: every output, shared and skipped runs, and
choices made without the reported split."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from uncertainty_mtl.cli import main
from uncertainty_mtl.errors import RunDirectoryError
from uncertainty_mtl.experiments.benchmark import methods as methods_module
from uncertainty_mtl.experiments.benchmark.selection import choose
from uncertainty_mtl.experiments.paper import ablations as ablations_module
from uncertainty_mtl.experiments.paper import table1
from uncertainty_mtl.experiments.paper import units as units_module
from uncertainty_mtl.experiments.paper.scene import SceneStudy
from uncertainty_mtl.experiments.runner import SMOKE_NOTE, Runner


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    common = [
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--set",
        f"data.root={out / 'city'}",
        "--set",
        "data.synthetic=true",
        "--workers",
        "2",
        "--quiet",
    ]
    for command in ("table1", "figure2", "appendix-b", "units", "ablations", "methods"):
        assert main(["reproduce", command, *common]) == 0, command
    return out, common


@pytest.mark.slow  # the module's six smoke studies
def test_every_command_writes_its_outputs_with_the_documented_keys(smoke_out):
    out, _ = smoke_out
    t1 = json.loads((out / "table1.json").read_text())
    assert set(t1["rows"]) == set(table1.ROWS)
    assert {
        "experiment",
        "preset",
        "seeds",
        "rows",
        "approx_optimal",
        "trivial_baselines",
        "wall_time_s",
        "runs_trained",
        "runs_used",
        "report_split",
    } <= set(t1)
    three = t1["rows"]["uw-three"]
    assert {"miou", "instance_mean_error_px", "depth_mean_error_px", "instance_ap"} <= set(
        three["metrics"]
    )
    assert set(three["final_effective_weights"]) == {"semantic", "instance", "depth"}
    assert three["paper"] == {
        "miou": 63.4,
        "instance_mean_error_px": 3.50,
        "depth_mean_error_px": 0.522,
    }
    candidates = t1["approx_optimal"]["candidates"]
    assert len(candidates) == len(table1.GRID) * len(table1.GRID_SCALES) == 24
    # every weighting at every overall scale: the search may choose a larger step too
    sums = sorted({round(sum(c["weights"].values()), 1) for c in candidates})
    assert sums == [1.0, 3.0, 7.0]
    assert "| 3 task uncertainty weighting |" in (out / "table1.md").read_text()
    f2 = json.loads((out / "figure2.json").read_text())
    assert set(f2["panels"]) == {"semantic-depth", "instance-depth"}
    assert all(len(p["points"]) == 11 for p in f2["panels"].values())
    b = json.loads((out / "appendix_b.json").read_text())
    assert set(b["final_log_variances"]) == {"-2", "0", "2", "5"}
    assert set(b["agreement_step"]) == {"semantic", "instance", "depth"}
    units = json.loads((out / "units.json").read_text())
    plain = [("fixed", "px"), ("fixed", "1/100 px"), ("learned", "px"), ("learned", "1/100 px")]
    assert [(r["training"], r["weighting"], r["depth_units"]) for r in units["rows"]] == [
        *[("sgd", *row) for row in plain],
        ("sgd", "learned, s₀ at the optimum", "1/100 px"),
        *[("adam", *row) for row in plain],
        *[("sgd-4x", *row) for row in plain],
    ]
    assert [r["steps"] for r in units["rows"]] == [4] * 9 + [16] * 4
    start = units["rows"][4]["initial_log_var_depth"][0]
    assert start == pytest.approx(units["rows"][2]["log_var_depth"] + 2 * math.log(100), abs=0.01)
    adam = next(r for r in units["rows"] if r["training"] == "adam" and r["weighting"] == "fixed")
    assert adam["semantic_weight"] == units["chosen_semantic_weight"]["adam"]
    # units.md is a function of units.json: a re-render keeps the invocation's timing
    units_md = (out / "units.md").read_text()
    assert units_md == f"{SMOKE_NOTE}\n\n{units_module._markdown(units, 'val')}"
    for name in ("table1", "figure2", "appendix_b", "units", "ablations", "methods"):
        assert (out / f"{name}.md").read_text().startswith(SMOKE_NOTE), name
    assert "| Adam, lr 1e-3, 4 steps | fixed (" in units_md
    assert "| SGD, 4× steps, 16 steps | learned | 1/100 px |" in units_md
    ablations = json.loads((out / "ablations.json").read_text())
    assert list(ablations["rows"]) == [
        *ablations_module.VARIANTS,
        "fixed-at-learned",
        "fixed-at-learned-mean",
    ]
    learned = ablations["rows"]["uw-three"]["final"]
    control = ablations["rows"]["fixed-at-learned"]
    assert control["fixed_weights"] == [
        {
            t: pytest.approx(learned[f"weight/{t}"], rel=5e-3)
            for t in ("semantic", "instance", "depth")
        }
    ]
    # the second control: the learned run's weights averaged over its logged steps
    study = Runner(
        SceneStudy("smoke", overrides=(f"data.root={out / 'city'}", "data.synthetic=true")), out
    )
    records = [
        json.loads(line)
        for line in (study.run_dir(ablations_module.variant_run("uw-three", 0)) / "metrics.jsonl")
        .read_text()
        .splitlines()
    ]
    logged = [r for r in records if "weight/depth" in r]
    assert logged
    assert ablations["rows"]["fixed-at-learned-mean"]["fixed_weights"] == [
        {
            t: pytest.approx(sum(r[f"weight/{t}"] for r in logged) / len(logged), rel=5e-3)
            for t in ("semantic", "instance", "depth")
        }
    ]
    methods = json.loads((out / "methods.json").read_text())
    assert list(methods["rows"]) == list(methods_module.CITY_METHODS)
    assert set(methods_module.EVERY_METHOD) < set(methods_module.CITY_METHODS)
    # the step cost is measured alone, equal's is the unit
    assert methods["rows"]["equal"]["cost_vs_equal"] == 1.0
    assert all(row["step_seconds"] > 0 for row in methods["rows"].values())
    assert "scene_step_costs" in methods["step_cost"]["how"]
    assert methods["protocol"] == "fixed-lr" and methods["optimiser"] == "sgd"
    assert methods["rows"]["equal"]["update_norm_vs_equal"] == pytest.approx(1.0, rel=1e-5)
    assert set(methods["rows"]["equal"]["paired"]) == {"uncertainty", "approx-optimal"}
    assert methods["rows"]["mgda"]["effective_weights"]["final"].keys() == set(table1.TASKS)
    # the uncertainty weighting and the tuned baseline are Table 1's runs, not new ones
    assert methods["rows"]["uncertainty"]["runs"] == t1["rows"]["uw-three"]["runs"]
    assert methods["rows"]["approx-optimal"]["runs"] == t1["rows"]["approx-optimal"]["runs"]
    auto = Path(methods["rows"]["uncertainty-auto"]["runs"][0]) / "config.yaml"
    assert "init_log_var: auto" in auto.read_text()
    for method, row in methods["rows"].items():
        assert "depth_x100" in row, method  # every row, aggregators and fixed weights too
        assert row["peak_memory_mb"]["mean"] > 0 and row["peak_memory_kind"] == "process_rss"
        seed0 = json.loads((Path(row["runs"][0]) / "results.json").read_text())["metrics"]
        single = {
            "miou": t1["rows"]["semantic-only"]["metrics"]["miou"]["mean"],
            "inst": t1["rows"]["instance-only"]["metrics"]["instance_mean_error_px"]["mean"],
            "depth": t1["rows"]["depth-only"]["metrics"]["depth_mean_error_px"]["mean"],
        }
        by_hand = (
            (
                -(seed0["miou"] - single["miou"]) / single["miou"]
                + (seed0["instance_mean_error_px"] - single["inst"]) / single["inst"]
                + (seed0["depth_mean_error_px"] - single["depth"]) / single["depth"]
            )
            * 100
            / 3
        )
        assert row["delta_m"]["values"][0] == pytest.approx(by_hand, rel=1e-9), method
    for png in ("figure2.png", "appendix_b.png", "methods.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # the module's six smoke studies
def test_runs_are_shared_between_commands_and_a_rerun_trains_nothing(smoke_out, capsys):
    out, common = smoke_out
    t1 = json.loads((out / "table1.json").read_text())
    f2 = json.loads((out / "figure2.json").read_text())
    # Figure 2's ends are Table 1's single-task runs: same directories, trained once.
    assert t1["rows"]["semantic-only"]["runs"][0].endswith("/seed0")
    runs = sorted(p.parent.parent.name for p in (out / "runs").glob("*/seed0/results.json"))
    assert len(runs) == len(set(runs))
    assert sum(name.startswith("semantic-only-") for name in runs) == 1
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/seed0/results.json")}
    capsys.readouterr()
    assert main(["reproduce", "table1", *common]) == 0
    assert main(["reproduce", "figure2", *common]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    rerun = json.loads((out / "table1.json").read_text())
    # what the results cost, whichever invocation trained them: the same when nothing trains
    assert t1["training_time_s"] > 0
    assert rerun["training_time_s"] == pytest.approx(t1["training_time_s"])
    # the search's runs (a candidate at a rung's steps; rungs of equal steps share runs) and
    # one run per row
    searched = {
        (json.dumps(s["weights"], sort_keys=True), rung["steps"])
        for rung in t1["approx_optimal"]["rungs"]
        for s in rung["scores"]
    }
    assert rerun["runs_trained"] == 0 and rerun["runs_used"] == len(searched) + len(table1.ROWS)
    assert "training 0 of the" in capsys.readouterr().out
    assert f2["panels"]["semantic-depth"]["points"][0]["weight"] == 1.0


@pytest.mark.slow  # the module's six smoke studies
def test_choices_never_look_at_the_reported_split(smoke_out):
    out, _ = smoke_out
    reproduction = Runner(
        SceneStudy("smoke", overrides=(f"data.root={out / 'city'}", "data.synthetic=true")), out
    )
    t1 = json.loads((out / "table1.json").read_text())
    full = reproduction.study.spec.selection_steps
    searched = [
        table1.grid_run(
            tuple(s["weights"][t] for t in ("semantic", "instance", "depth")),
            None if rung["steps"] == full else rung["steps"],
        )
        for rung in t1["approx_optimal"]["rungs"]
        for s in rung["scores"]
    ]
    assert len(searched) == 24 + 8 + 3
    for run in searched:
        config = reproduction.config(run)
        assert config.eval.report_split == config.eval.select_split == "val"
        result = json.loads((reproduction.run_dir(run) / "results.json").read_text())
        assert result["split"] == "val"  # the grid's runs were only ever scored on val
    row = reproduction.config(table1.row_run("uw-three", 0))
    assert row.eval.report_split == "test" and row.eval.select_split == "val"
    paper = Runner(SceneStudy("paper", data="/tiny"), out)
    grid = paper.config(table1.grid_runs()[0])
    assert grid.data.train_split == "train:fit" and grid.eval.report_split == "train:holdout"
    assert paper.config(table1.row_run("uw-three", 0)).eval.report_split == "val"


def test_choose_uses_the_metrics_it_is_given_only():
    candidates = {
        "a": {"miou": 50.0, "depth_mean_error_px": 0.30},
        "b": {"miou": 60.0, "depth_mean_error_px": 0.35},
        "c": {"miou": 58.0, "depth_mean_error_px": 0.20},
    }
    best, scores = choose(candidates, ["semantic", "depth"])
    # semantic errors 50, 40, 42 -> 1, 0, 0.2; depth errors 0.30, 0.35, 0.20 -> 2/3, 1, 0
    assert best == "c"
    assert scores == pytest.approx({"a": (1 + 2 / 3) / 2, "b": 0.5, "c": 0.1})


def test_bad_arguments(tmp_path, capsys):
    assert main(["reproduce", "table1", "--preset", "paper", "--out", str(tmp_path)]) == 2
    assert "needs --data ROOT" in capsys.readouterr().err
    assert (
        main(["reproduce", "table1", "--preset", "smoke", "--only", "row9", "--out", str(tmp_path)])
        == 2
    )
    assert "unknown row 'row9'" in capsys.readouterr().err


@pytest.mark.slow  # the module's six smoke studies
def test_only_trains_one_row_and_writes_no_table(smoke_out, tmp_path):
    out, _ = smoke_out
    args = [
        "reproduce",
        "table1",
        "--preset",
        "smoke",
        "--out",
        str(tmp_path),
        "--only",
        "depth-only",
        "--set",
        f"data.root={out / 'city'}",
        "--quiet",
    ]
    assert main(args) == 0
    trained = sorted(p.parent.parent.name for p in (tmp_path / "runs").glob("*/seed0/results.json"))
    assert len(trained) == 1 and trained[0].startswith("depth-only-")
    assert not (tmp_path / "table1.md").exists() and not (tmp_path / "table1.json").exists()


@pytest.mark.slow
def test_submitit_local_launcher_writes_the_same_numbers_as_local(smoke_out, tmp_path, capsys):
    out, _ = smoke_out
    other = tmp_path / "submitit"
    # The same city (its cache too) and one thread per run, as the local pool of 2 had.
    args = [
        "--preset",
        "smoke",
        "--out",
        str(other),
        "--set",
        f"data.root={out / 'city'}",
        "--set",
        "data.synthetic=true",  # as the local study's runs: the same run directories
        "--launcher",
        "submitit-local",
        "--slurm-cpus",
        "1",
        "--quiet",
    ]
    assert main(["reproduce", "appendix-b", *args]) == 0
    local = json.loads((out / "appendix_b.json").read_text())
    remote = json.loads((other / "appendix_b.json").read_text())
    assert remote["runs_trained"] == remote["runs_used"] == 4
    for start, values in local["final_log_variances"].items():
        assert remote["final_log_variances"][start] == pytest.approx(values, rel=1e-5), start
    # submitit kept each job's logs; the run directories are the runner's own.
    assert list((other / "submitit").glob("*_log.out"))
    # The same runs: the same resolved configs, so the same directory names.
    remote_runs = {p.parent.name for p in (other / "runs").glob("*/seed0")}
    assert len(remote_runs) == remote["runs_used"]
    assert remote_runs <= {p.parent.name for p in (out / "runs").glob("*/seed0")}


def _slurm_stubs(tmp_path, monkeypatch, sbatch: str):
    """``srun`` and ``sbatch`` stubs first on the PATH (submitit looks for ``srun`` to believe
    it is on a cluster; ``sbatch`` runs the given shell lines)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\n{sbatch}\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_slurm_launcher_submits_a_job_array_and_returns(tmp_path, monkeypatch):
    """Without a cluster: submitit's SLURM executor with ``srun`` and ``sbatch`` stubs on the
    PATH; the stub keeps the submission script and answers with a job id."""
    from uncertainty_mtl.experiments.executors import SlurmOptions, SubmititExecutor, Submitted

    bin_dir = _slurm_stubs(
        tmp_path,
        monkeypatch,
        f'cp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"',
    )
    study = SceneStudy("smoke", overrides=(f"data.root={tmp_path / 'city'}", "data.synthetic=true"))
    monkeypatch.setattr(study, "prepare", lambda **_: None)  # no city needed to submit
    options = SlurmOptions(partition="gpu", gpus=2, cpus=6, time_min=30)
    runner = Runner(
        study, tmp_path / "out", SubmititExecutor(tmp_path / "jobs", slurm=options), False
    )
    runs = [table1.row_run("uw-three", 0), table1.row_run("depth-only", 0)]
    with pytest.raises(Submitted) as info:
        runner.results(runs)
    assert info.value.job_ids == ["4242_0", "4242_1"]  # one sbatch: a job array of two runs
    script = (tmp_path / "submitted.sh").read_text()
    for line in (
        "--array=0-1",
        "--partition=gpu",
        "--ntasks-per-node=2",
        "--gpus-per-node=2",
        "--cpus-per-task=6",
        "--time=30",
    ):
        assert f"#SBATCH {line}" in script, line
    assert not list(tmp_path.glob("out/runs/*/seed0/results.json"))  # nothing trained here

    # Asked again while SLURM still runs the first job: only the other run is submitted again.
    (bin_dir / "sacct").write_text(
        "#!/bin/sh\necho 'JobID|State|NodeList'\necho '4242_0|RUNNING|node1'\n"
        "echo '4242_1|FAILED|node2'\n"
    )
    (bin_dir / "sacct").chmod(0o755)
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 4343"\n')
    runner = Runner(
        study, tmp_path / "out", SubmititExecutor(tmp_path / "jobs", slurm=options), False
    )
    with pytest.raises(Submitted) as info:
        runner.results(runs)
    assert [j.split("_")[0] for j in info.value.job_ids] == ["4343"]
    assert info.value.waiting == ["4242_0"]
    assert "still queued or running as job(s) 4242_0" in str(info.value)
    # The run whose job failed is named, with its job and state, and is the one submitted again.
    assert len(info.value.failed) == 1 and info.value.failed[0].startswith("depth-only-")
    assert info.value.failed[0].endswith("/seed0 (4242_1, FAILED)")
    assert "1 run(s) whose job ended without a result: depth-only-" in str(info.value)


def test_reproduce_with_launcher_slurm_submits_and_returns_without_a_table(
    tmp_path, monkeypatch, capsys
):
    _slurm_stubs(tmp_path, monkeypatch, 'echo "Submitted batch job 77"')
    out = tmp_path / "out"
    args = [
        "reproduce",
        "table1",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--set",
        f"data.root={tmp_path / 'city'}",
        "--set",
        "data.synthetic=true",
        "--launcher",
        "slurm",
        "--quiet",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    # The grid and every row but the one chosen on the grid: one job array, then it returns.
    assert "umtl: submitted 32 run(s)" in printed and "77_31" in printed  # 24 + 8
    assert not (out / "table1.md").exists() and not (out / "table1.json").exists()
    assert not list(out.glob("runs/*/seed0/results.json"))


@pytest.mark.slow  # the module's six smoke studies
def test_halving_chooses_what_the_full_grid_chooses_on_the_smoke_preset(smoke_out):
    out, _ = smoke_out
    t1 = json.loads((out / "table1.json").read_text())
    search = t1["approx_optimal"]
    assert search["search"] == "halving"
    assert [(r["candidates"], r["steps"]) for r in search["rungs"]] == [(24, 1), (8, 1), (3, 2)]
    # the second rung's runs are the first's (same steps): trained once, counted once
    assert search["steps"] == 24 * 1 + 3 * 2 and search["full_grid_steps"] == 24 * 2
    with Runner(
        SceneStudy(
            "smoke", overrides=(f"data.root={out / 'city'}", "data.synthetic=true"), search="grid"
        ),
        out,
    ) as grid:
        chosen, record, done = table1.approx_optimal(grid)
        # the last rung's three runs are full selection runs: read from disk, not retrained
        assert grid.timing()["runs_trained"] == 24 - 3
    assert len(done) == 24 and [r["steps"] for r in record["rungs"]] == [2]
    assert dict(zip(("semantic", "instance", "depth"), chosen, strict=True)) == search["chosen"]


@pytest.mark.slow  # two small tuned searches on the smoke preset
@pytest.mark.parametrize(
    ("optimiser", "rows", "centre"),
    [
        ("sgd", ("equal", "uncertainty", "approx-optimal", "mgda"), 0.01),  # the preset's
        ("adam", ("equal", "approx-optimal"), 1e-3),
    ],
)
def test_the_city_tuned_arms_give_every_row_its_own_rate(
    smoke_out, monkeypatch, optimiser, rows, centre
):
    from uncertainty_mtl.experiments.benchmark.selection import Halving
    from uncertainty_mtl.experiments.benchmark.tuning import LrSearch

    out, common = smoke_out
    monkeypatch.setattr(methods_module, "EVERY_METHOD", rows)
    small = LrSearch(factors=(1.0, 2.0), halving=Halving(eta=2, rungs=2), extensions=1)
    monkeypatch.setattr(methods_module, "LrSearch", lambda: small)
    argv = ["reproduce", "methods", "--protocol", "tuned", "--seeds", "2", *common]
    assert main([*argv, "--optimiser", optimiser]) == 0
    summary = json.loads((out / f"methods-tuned-{optimiser}.json").read_text())
    assert summary["protocol"] == "tuned" and summary["optimiser"] == optimiser
    assert summary["preset"] == "smoke" and summary["search"]["base_lr"] == centre
    assert list(summary["rows"]) == list(rows)
    references = ("semantic-only", "instance-only", "depth-only")
    assert set(summary["searches"]) == {*references, *rows}
    for name, row in summary["rows"].items():
        search = summary["searches"][name]
        assert row["lr"] == search["chosen"] and row["lr"] in search["grid"]
        assert search["grid"][:2] == [centre, 2 * centre]
        assert len(row["runs"]) == 2 and row["delta_m_all_pairs"]["n"] == 4
        config = (Path(row["runs"][0]) / "config.yaml").read_text()
        assert f"optimizer: {optimiser}" in config and f"lr: {row['lr']}" in config
    # the first rung's runs were selection runs, scored on val only
    short = list((out / "runs").glob(f"*-lr{centre:g}-steps2-*/seed0/results.json"))
    assert short and all(json.loads(p.read_text())["split"] == "val" for p in short)
    assert set(summary["single_task"]) == set(references)
    if "mgda" in rows:  # the paired difference is the mean of the seeds' differences
        mgda = summary["rows"]["mgda"]
        equal = summary["rows"]["equal"]["delta_m"]["values"]
        by_hand = sum(a - b for a, b in zip(mgda["delta_m"]["values"], equal, strict=True)) / 2
        assert mgda["paired"]["equal"]["delta_m"]["mean"] == pytest.approx(by_hand)
    assert summary["rows"]["equal"]["cost_vs_equal"] == 1.0
    assert "scene_step_costs" in summary["step_cost"]["how"]
    md = (out / f"methods-tuned-{optimiser}.md").read_text()
    assert f"chose its {methods_module.OPTIMISER_NAMES[optimiser]} learning rate" in md
    assert (out / f"methods-tuned-{optimiser}.png").read_bytes()[:4] == b"\x89PNG"


def test_selection_metrics_read_the_kept_checkpoints_validation(tmp_path):
    from uncertainty_mtl.experiments.runner import Run

    class Dirs:
        def run_dir(self, run):
            return tmp_path

    records = [
        {"step": 2, "split": "val", "val/miou": 10.0, "val/depth_mean_error_px": 0.9},
        {"step": 4, "loss/total": 3.0},
        {"step": 4, "split": "val", "val/miou": 12.0, "val/depth_mean_error_px": 0.7},
        {"step": 4, "split": "test", "test/miou": 99.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = {"training": {"best_step": 2, "selection_split": "val"}, "metrics": {"miou": 50}}
    found = methods_module.selection_metrics(Dirs(), Run("x"), result)
    assert found == {"miou": 10.0, "depth_mean_error_px": 0.9}  # step 2's val, not test's
    # a selection run's result is already on the selection split
    assert methods_module.selection_metrics(Dirs(), Run("x", selection=True), result) == {
        "miou": 50
    }
    result["training"]["best_step"] = 6
    with pytest.raises(RunDirectoryError, match="no val record at the kept step 6"):
        methods_module.selection_metrics(Dirs(), Run("x"), result)
