"""Configs: every shipped one is valid; bad keys and types are errors that list what is allowed."""

from __future__ import annotations

import pytest

from uncertainty_mtl.cli import main
from uncertainty_mtl.config import ConfigError, load_config, shipped_configs


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_is_valid(name):
    config = load_config(name)
    assert config.trained_tasks


def test_the_expected_configs_are_shipped():
    names = set(shipped_configs())
    assert "smoke" in names and "cpu/three-task" in names
    assert {n for n in names if n.startswith("paper/tiny-cityscapes/")} >= {
        "paper/tiny-cityscapes/three-task",
        "paper/tiny-cityscapes/semantic",
        "paper/tiny-cityscapes/unweighted",
        "paper/tiny-cityscapes/approx-optimal",
    }
    assert any(n.startswith("paper/cityscapes/") for n in names)


def test_paper_settings():
    c = load_config("paper/tiny-cityscapes/three-task")
    assert (c.model.backbone, c.optim.lr, c.optim.momentum, c.optim.nesterov) == (
        "resnet101",
        2.5e-3,
        0.9,
        True,
    )
    assert (c.optim.weight_decay, c.optim.poly_power, c.optim.batch_size, c.optim.steps) == (
        1e-4,
        0.9,
        8,
        50000,
    )
    assert c.data.flip and c.eval.report_split == "val" and c.eval.select_split is None
    full = load_config("paper/cityscapes/three-task")
    assert (full.optim.steps, full.optim.batch_size, full.data.scale, full.data.crop) == (
        100000,
        16,
        [0.7, 2.0],
        [512, 512],
    )
    approx = load_config("paper/tiny-cityscapes/approx-optimal")
    assert approx.weighting.weights == {"semantic": 0.89, "instance": 0.01, "depth": 0.1}


def test_overrides_are_type_checked():
    c = load_config(
        "smoke",
        [
            "optim.lr=1e-3",
            "optim.steps=10",
            "data.size=[16, 32]",
            "eval.select_split=null",
            "weighting.init_log_var=-2",
        ],
    )
    assert c.optim.lr == 1e-3 and c.optim.steps == 10 and c.data.size == [16, 32]
    assert c.eval.select_split is None and c.weighting.init_log_var == -2.0
    with pytest.raises(ConfigError, match=r"optim\.steps: expected an integer, got 'many'"):
        load_config("smoke", ["optim.steps=many"])
    with pytest.raises(ConfigError, match=r"data\.flip: expected true or false"):
        load_config("smoke", ["data.flip=1"])


def test_unknown_keys_list_what_is_allowed():
    with pytest.raises(ConfigError) as info:
        load_config("smoke", ["optim.learning_rate=0.1"])
    message = str(info.value)
    assert "optim: unknown key(s) ['learning_rate']" in message and "'lr'" in message
    with pytest.raises(ConfigError, match=r"config: unknown key\(s\) \['optimizer'\]"):
        load_config(data={"optimizer": {}})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.backbone=vgg"], "model.backbone: 'vgg' is not one of"),
        (["tasks=[semantic, normals]"], "must be a non-empty subset"),
        (["weighting.kind=fixed"], "must give a weight for each of tasks"),
        (
            ["weighting.kind=fixed", "weighting.weights={semantic: 1, instance: 0, depth: -1}"],
            "must be >= 0",
        ),
        (["weighting.weights={semantic: 1}"], "for kind 'fixed' only"),
        (["model.sync_bn=true"], "SyncBatchNorm refuses CPU"),
        (["optim.steps=0"], "optim.steps must be > 0"),
        (["data.crop=[512]"], "data.crop must be 2 positive numbers"),
        (["weighting.init_log_var={normals: 1}"], "init_log_var names ['normals'], which are not"),
        (["weighting.init_log_var=.inf"], "init_log_var must be finite"),
        (
            ["weighting.init_log_var=high"],
            "init_log_var must be a number, task -> number or 'auto'",
        ),
    ],
)
def test_invalid_values(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config("smoke", overrides)


def test_fixed_zero_weight_turns_a_task_off():
    weights = "weighting.weights={semantic: 1, instance: 0, depth: 0.5}"
    c = load_config("smoke", ["weighting.kind=fixed", weights])
    assert c.trained_tasks == ["semantic", "depth"]


def test_per_task_initial_log_variances_reach_the_weighting():
    from uncertainty_mtl.engine import build_weighting

    c = load_config("smoke", ["weighting.init_log_var={depth: 5.5}"])
    s = build_weighting(c).log_variances()
    assert s["depth"] == 5.5 and s["semantic"] == s["instance"] == 0.0
    assert build_weighting(load_config("smoke", ["weighting.init_log_var=-2"])).log_variances() == {
        t: -2.0 for t in ("semantic", "instance", "depth")
    }


def test_base_chain_and_files(tmp_path):
    (tmp_path / "a.yaml").write_text("base: smoke\noptim: {steps: 9}\n")
    (tmp_path / "b.yaml").write_text("base: a\noptim: {lr: 0.5}\n")
    c = load_config(tmp_path / "b.yaml")
    assert c.optim.steps == 9 and c.optim.lr == 0.5 and c.model.backbone == "small"
    (tmp_path / "loop.yaml").write_text("base: loop\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="no shipped config of that name"):
        load_config("cpu/nonexistent")
    # a user's file naming a shipped config by its last part only: the full name suggested
    (tmp_path / "mine.yaml").write_text("base: three-task\noptim: {steps: 9}\n")
    with pytest.raises(ConfigError, match=r"did you mean 'cpu/three-task'"):
        load_config(tmp_path / "mine.yaml")
    (tmp_path / "mine.yaml").write_text("base: cpu/three-task\noptim: {steps: 9}\n")
    assert load_config(tmp_path / "mine.yaml").optim.steps == 9


def test_cli_rejects_a_bad_config_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--config", "smoke", "--set", "optim.lr=fast", "--out", str(out)])
    assert code == 2
    assert "optim.lr: expected a number, got 'fast'" in capsys.readouterr().err
    assert not out.exists()


def test_a_patch_leaves_its_base_untouched_and_the_last_override_wins():
    from uncertainty_mtl.config import apply_patch, parse_overrides, read_config

    base = read_config("cpu/unweighted")
    weights = dict(base["weighting"]["weights"])
    patched = apply_patch(base, parse_overrides(["weighting.weights.semantic=0.9"]))
    assert patched["weighting"]["weights"]["semantic"] == 0.9
    assert base["weighting"]["weights"] == weights  # a shared base serves every run of a study
    later = parse_overrides(["optim.lr=0.1", "optim={lr: 0.2}", "optim.lr=0.3"])
    assert apply_patch(base, later)["optim"]["lr"] == 0.3


def test_optim_optimizer_builds_adam_with_the_log_variances_undecayed():
    import torch

    from uncertainty_mtl.engine.builders import build_model, build_optimiser, build_weighting

    config = load_config("smoke", ["optim.optimizer=adam", "optim.lr=1e-3"])
    model, weighting = build_model(config), build_weighting(config)
    optimiser = build_optimiser(config, model, weighting)
    assert type(optimiser) is torch.optim.Adam
    (group,) = [
        g for g in optimiser.param_groups if any(p is weighting.log_vars for p in g["params"])
    ]
    assert group["weight_decay"] == 0 and group["lr"] == 1e-3
    assert type(build_optimiser(load_config("smoke"), model, weighting)) is torch.optim.SGD
    with pytest.raises(ConfigError, match=r"optim\.optimizer: 'rmsprop' is not one of"):
        load_config("smoke", ["optim.optimizer=rmsprop"])
    # Adam has no Nesterov switch to contradict
    load_config("smoke", ["optim.optimizer=adam", "optim.momentum=0"])


def test_the_paper_preset_keeps_the_papers_aspp_rates_and_its_figure2_lr():
    from uncertainty_mtl.experiments.paper.scene import PRESETS

    assert load_config("paper/tiny-cityscapes/three-task").model.aspp_rates == [12, 24, 36]
    assert PRESETS["paper"].figure2_patch == {"optim.lr": 0.01}
    assert PRESETS["cpu"].figure2_patch == {}  # Figure 2 shares Table 1's runs there
