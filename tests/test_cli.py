"""The ``umtl`` command's own behaviour: what it says after Ctrl-C (and that the advice works),
``--version``, ``train --device`` and ``predict --quiet``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

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


def test_evaluate_from_another_directory_suggests_data(city, tmp_path, capsys, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "city").symlink_to(city)
    monkeypatch.chdir(work)  # the run's data root is relative: "city"
    args = ["train", "--config", "smoke", "--out", str(tmp_path / "run"), "--quiet"]
    for item in ("data.root=city", "data.synthetic=false", "optim.steps=1"):
        args += ["--set", item]
    assert main(args) == 0
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("umtl: error: city: the run's data root") and "--data ROOT" in err
    assert main(["evaluate", str(tmp_path / "run"), "--quiet", "--data", str(city)]) == 0
