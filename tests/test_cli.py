"""The ``umtl`` command's own behaviour: what it says after Ctrl-C (and that the advice works),
``--version``, ``train --device`` and ``predict --quiet``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import uncertainty_mtl.engine as engine
from uncertainty_mtl import __version__
from uncertainty_mtl.cli import main
from uncertainty_mtl.data.layout import write_png


def train_args(city, out, *extra):
    args = ["train", "--config", "smoke", "--out", str(out), "--quiet"]
    for item in (f"data.root={city}", "data.synthetic=false", "eval.cluster_method=null", *extra):
        args += ["--set", item]
    return args


def interrupt_at(monkeypatch, step):
    """``umtl train`` whose training is interrupted (Ctrl-C) after ``step``."""
    real = engine.train

    def train(*args, **kwargs):
        def ctrl_c(at):
            if at == step:
                raise KeyboardInterrupt

        return real(*args, **kwargs, on_step=ctrl_c)

    monkeypatch.setattr(engine, "train", train)
    return real


@pytest.mark.parametrize(
    ("step", "advice", "rerun"),
    [
        (4, "with --resume", ["--resume"]),  # the smoke config checkpoints at step 3
        (1, "to start again", []),
    ],
)
def test_ctrl_c_says_how_to_go_on_and_the_advice_works(
    step, advice, rerun, city, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    args = train_args(city, out)
    interrupt_at(monkeypatch, step)
    assert main(args) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("umtl: interrupted; ") and advice in err, err
    monkeypatch.undo()
    assert main([*args, *rerun]) == 0  # what the message said to run
    assert json.loads((out / "results.json").read_text())["split"] == "test"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"umtl {__version__}"


def test_help_and_version_start_without_importing_torch():
    # `umtl --help` used to take seconds: the package imported torch for the loss's classes
    code = (
        "import sys, contextlib, io\n"
        "from uncertainty_mtl.cli import main\n"
        "for args in (['--help'], ['--version'], ['train', '--help'], ['reproduce', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(args)\n"
        "print(sorted(m for m in ('torch', 'numpy', 'yaml') if m in sys.modules))\n"
        "import uncertainty_mtl\n"
        "from uncertainty_mtl import UncertaintyWeighting, parameter_groups\n"
        "print('torch' in sys.modules, 'UncertaintyWeighting' in dir(uncertainty_mtl))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["[]", "True True"]
    import uncertainty_mtl

    with pytest.raises(AttributeError, match="has no attribute 'Uncertainty'"):
        uncertainty_mtl.Uncertainty  # noqa: B018


def test_train_device_sets_the_run_device(city, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*train_args(city, out, "optim.steps=1"), "--device", "cpu"]) == 0
    assert "device: cpu" in (out / "config.yaml").read_text()
    if not torch.cuda.is_available():
        other = tmp_path / "cuda"
        capsys.readouterr()
        assert main([*train_args(city, other), "--device", "cuda:0"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("umtl: error: run.device") and not other.exists()


def test_predict_quiet_prints_nothing(city, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(city, run, "optim.steps=1")) == 0
    image = tmp_path / "in" / "x.png"
    image.parent.mkdir()
    write_png(image, np.zeros((32, 64, 3), np.uint8))
    capsys.readouterr()
    args = ["predict", str(run), str(image), "--out", str(tmp_path / "pred"), "--quiet"]
    assert main(args) == 0
    assert capsys.readouterr().out == "" and (tmp_path / "pred" / "x_panel.png").is_file()


def test_a_home_relative_root_is_the_home_directory(tmp_path, monkeypatch):
    from uncertainty_mtl.config import load_config

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "my.yaml").write_text("base: smoke\ndata:\n  root: ~/city64\n  cache_dir: ~/c\n")
    config = load_config(str(tmp_path / "my.yaml"))
    # It used to make a folder literally named "~" in the current directory.
    assert config.data.root == str(tmp_path / "city64")
    assert config.data.cache_dir == str(tmp_path / "c")


def test_a_run_stores_its_data_root_absolute_and_an_old_relative_one_suggests_data(
    city, tmp_path, capsys, monkeypatch
):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "city").symlink_to(city)
    monkeypatch.chdir(work)  # the root given is relative: "city"
    run = tmp_path / "run"
    args = ["train", "--config", "smoke", "--out", str(run), "--quiet"]
    for item in ("data.root=city", "data.synthetic=false", "optim.steps=1"):
        args += ["--set", item]
    assert main(args) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["root"] == str(work / "city")
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", str(run), "--quiet"]) == 0  # found from anywhere
    # a run saved before roots were stored absolute: its relative root, read from elsewhere
    saved["data"]["root"] = "city"
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("umtl: error: city: the run's data root") and "--data ROOT" in err
    assert main(["evaluate", str(run), "--quiet", "--data", str(city)]) == 0
    # resumed from the directory it was trained in, its relative root is the same root: only
    # a real difference is named
    monkeypatch.chdir(work)
    assert main([*args[:-2], "--set", "optim.steps=2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "optim.steps" in err and "data.root" not in err


def test_a_cityscapes_root_is_read_as_it_is_without_naming_data_synthetic(city, tmp_path, capsys):
    # a real Cityscapes tree (here: the city's files without the marker that makes them ours)
    real = tmp_path / "cityscapes"
    shutil.copytree(city, real)
    (real / "synth.json").unlink()
    out = tmp_path / "run"
    args = ["train", "--config", "smoke", "--out", str(out), "--quiet"]
    sets = [f"data.root={real}", "optim.steps=1", "eval.cluster_method=null"]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    assert json.loads((out / "results.json").read_text())["frames"] == 8
    assert not (real / "synth.json").exists()  # nothing generated into it
    # a folder of something else: one line naming the key, before a run directory exists
    other = tmp_path / "photos"
    other.mkdir()
    (other / "me.jpg").write_bytes(b"jpeg")
    out = tmp_path / "run2"
    args[4], sets[0] = str(out), f"data.root={other}"
    capsys.readouterr()
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"umtl: error: data.root {other}: not a Cityscapes-layout root") and (
        "\n" not in err
    )
    assert sorted(p.name for p in other.iterdir()) == ["me.jpg"]
    assert not out.exists()


def test_printed_metrics_carry_their_units(capsys):
    from uncertainty_mtl.cli import _print_summary

    _print_summary(
        {
            "split": "test",
            "frames": 8,
            "checkpoint": "best",
            "metrics": {
                "miou": 0.377,  # a percentage: 0.377 %, not 37.7 %
                "iou_per_class": {"road": 1.0},  # per class: in results.json only
                "instance_mean_error_px": 3.747,
                "depth_pixels": 14137,
            },
        }
    )
    assert capsys.readouterr().out.splitlines() == [
        "test split, 8 frames, best checkpoint (every number, per class too, in results.json):",
        "  miou                    0.38 %",
        "  instance_mean_error_px  3.747 px",
        "  depth_pixels            14,137 labelled pixels",
    ]


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_a_mistyped_root_is_one_line_and_nothing_is_generated_or_created(command, tmp_path, capsys):
    # The smoke config generates its own city; a root named after it is the user's data.
    typo = tmp_path / "my-citty"
    out = tmp_path / "out"
    head = ["train", "--config", "smoke"] if command == "train" else ["reproduce", "table1"]
    if command == "reproduce":
        head += ["--preset", "smoke"]
    assert main([*head, "--set", f"data.root={typo}", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"umtl: error: data.root {typo}: no such directory; expected a Cityscapes-layout root "
        "(leftImg8bit/, gtFine/, disparity/); to generate the synthetic city there instead, set "
        "data.synthetic=true"
    )
    assert not typo.exists() and not out.exists()


def test_a_root_named_beside_synthetic_true_is_generated_and_alone_is_data(tmp_path):
    from uncertainty_mtl.config import load_config

    mine = tmp_path / "mine.yaml"
    mine.write_text(f"base: smoke\ndata:\n  root: {tmp_path / 'city'}\n")
    assert load_config("smoke").data.synthetic  # the shipped config asks for its city
    assert not load_config(mine).data.synthetic  # a root of your own file: data
    assert not load_config("smoke", [f"data.root={tmp_path}"]).data.synthetic
    asked = load_config("smoke", [f"data.root={tmp_path}", "data.synthetic=true"])
    assert asked.data.synthetic
    mine.write_text(f"base: smoke\ndata:\n  root: {tmp_path / 'city'}\n  synthetic: true\n")
    assert load_config(mine).data.synthetic
    # a file that changes other data keys keeps its base's root and its base's choice
    mine.write_text("base: smoke\ndata:\n  workers: 1\n")
    assert load_config(mine).data.synthetic


def test_evaluate_names_a_directory_that_does_not_exist(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    nope = tmp_path / "nope"
    assert err == f"umtl: error: {nope}: no such directory; expected a run directory of umtl train"


def test_ctrl_c_under_a_progress_bar_starts_its_own_line(city, tmp_path, capsys, monkeypatch):
    from tqdm import tqdm

    def train(*args, **kwargs):
        bar = tqdm(total=10, desc="training", file=sys.stderr)  # left open, as a loop's bar is
        bar.update(3)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train", train)
    assert main(train_args(city, tmp_path / "run")) == 130
    err = capsys.readouterr().err
    message = [line for line in err.replace("\r", "\n").splitlines() if "interrupted" in line]
    assert message and message[0].startswith("umtl: interrupted; "), err
