"""The step's diagnostic of the methods benchmark: the norm of a method's shared update against
``equal``'s on the same batch, checked against closed forms, and harmless to the training."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from uncertainty_mtl.engine.step import log_record, update
from uncertainty_mtl.weighting import FixedWeighting, UncertaintyWeighting
from uncertainty_mtl.weighting.aggregators import GradientAggregation

TASKS = ("a", "b")


class Twin(nn.Module):
    """A shared linear trunk and two heads; with ``same_heads`` both tasks have one loss
    function, so their gradients at the trunk are equal."""

    def __init__(self, same_heads: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(3, 4)
        self.heads = nn.ModuleDict({t: nn.Linear(4, 1) for t in TASKS})
        if same_heads:
            self.heads["b"].load_state_dict(self.heads["a"].state_dict())

    def last_shared_layer(self) -> nn.Module:
        return self.trunk

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        code = self.trunk(x)
        return code, {t: (head(code) - 1.0).pow(2).mean() for t, head in self.heads.items()}


def step(model: Twin, weighting: nn.Module, *, measure: bool = True) -> float | None:
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    code, losses = model.losses(x)
    optimiser = torch.optim.SGD([*model.parameters(), *weighting.parameters()], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    features = code if weighting.needs_features else None
    total = weighting(losses)
    return update(
        model, weighting, optimiser, scaler, total, losses, features, compare_to_equal=measure
    )


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: FixedWeighting(dict.fromkeys(TASKS, 1.0)), 1.0),  # equal itself
        (lambda: FixedWeighting(dict.fromkeys(TASKS, 2.0)), 2.0),  # twice the step
        # s = 0 under the Gaussian term ½·exp(−s)·L + ½·s: every weight ½
        (lambda: UncertaintyWeighting(dict.fromkeys(TASKS, "gaussian")), 0.5),
    ],
)
def test_a_loss_weighting_s_update_is_its_weights_times_equal_s(make, expected):
    assert step(Twin(), make()) == pytest.approx(expected, rel=1e-5)


def test_mgda_on_two_equal_gradients_takes_half_of_equal_s_step():
    # the min-norm point of {g, g} is g; equal's update is 2g
    ratio = step(Twin(same_heads=True), GradientAggregation(TASKS, "mgda"))
    assert ratio == pytest.approx(0.5, rel=1e-4)


def test_measuring_changes_nothing_of_the_update():
    measured, plain = Twin(), Twin()
    weighting = UncertaintyWeighting(dict.fromkeys(TASKS, "gaussian"))
    assert step(plain, copy.deepcopy(weighting), measure=False) is None
    assert step(measured, copy.deepcopy(weighting)) is not None
    for p, q in zip(measured.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_measured_step_is_logged_under_its_key():
    weighting = FixedWeighting(dict.fromkeys(TASKS, 1.0))
    losses = {t: torch.tensor(1.0) for t in TASKS}
    record = log_record(3, 0, losses, torch.tensor(2.0), weighting, 0.1, 0.75)
    assert record["update_norm_vs_equal"] == 0.75
    assert "update_norm_vs_equal" not in log_record(4, 0, losses, torch.tensor(2.0), weighting, 0.1)


def test_an_aggregator_that_never_gives_its_weights_logs_none():
    config, mgda = GradientAggregation(TASKS, "config"), GradientAggregation(TASKS, "mgda")
    step(Twin(), config)
    step(Twin(), mgda)
    assert not any(k.startswith("weight/") for k in config.log_dict())
    assert {k for k in mgda.log_dict() if k.startswith("weight/")} == {"weight/a", "weight/b"}


def test_the_diagnostics_of_a_row_read_its_runs_logs(tmp_path):
    from uncertainty_mtl.experiments.benchmark.methods_stats import rows_diagnostics

    lines = [
        {"step": 1, "weight/a": 1.0, "weight/b": 3.0, "update_norm_vs_equal": 0.5},
        {"step": 2, "weight/a": 2.0, "weight/b": 1.0},
        {"step": 3, "weight/a": 3.0, "weight/b": 2.0, "update_norm_vs_equal": 1.5},
    ]
    runs = []
    for i, scale in enumerate((1.0, 3.0)):
        run = tmp_path / f"seed{i}"
        run.mkdir()
        scaled = [{k: v * scale if k != "step" else v for k, v in r.items()} for r in lines]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in scaled) + "\n")
        runs.append(run)
    found = rows_diagnostics(runs, TASKS)
    # per run: final (3, 2)·scale, mean (2, 2)·scale, ratio 1·scale; then the mean over runs
    assert found["effective_weights"] == {
        "final": {"a": 6.0, "b": 4.0},
        "mean": {"a": 4.0, "b": 4.0},
    }
    assert found["update_norm_vs_equal"] == pytest.approx(2.0)
    (runs[0] / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")  # an old run
    assert rows_diagnostics(runs, TASKS) == {
        "effective_weights": None,
        "update_norm_vs_equal": None,
    }
