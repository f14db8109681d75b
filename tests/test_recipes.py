"""The recipes of examples/ for PyTorch Lightning and the Hugging Face Trainer, run as users
would run them (skipped where the framework is not installed; `make test` installs both)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _check(weighting, optimiser, state):
    s = weighting.log_variances()
    # trained through the framework: both log-variances moved, the class loss (below 1) to a
    # negative s, the noisy value's squared error (about 1 and above) much less
    assert s["class"] < -0.5 and s["class"] < s["value"]
    (log_var,) = list(weighting.parameters())
    group = next(g for g in optimiser.param_groups if any(p is log_var for p in g["params"]))
    assert group["weight_decay"] == 0.0 and len(group["params"]) == 1  # no decay on s
    assert any(g["weight_decay"] > 0 for g in optimiser.param_groups)
    assert any(k.startswith("weighting.") for k in state)  # saved with the model


@pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)
def test_the_lightning_recipe_trains_the_log_variances():
    pytest.importorskip("lightning", reason="pip install lightning")
    module = _recipe("lightning_recipe").main()
    _check(module.weighting, module.trainer.optimizers[0], module.state_dict())


@pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)
def test_the_hugging_face_recipe_trains_the_log_variances(tmp_path):
    pytest.importorskip("transformers", reason="pip install transformers accelerate")
    pytest.importorskip("accelerate", reason="pip install accelerate")
    trainer = _recipe("hf_trainer_recipe").main(out=str(tmp_path))
    model = trainer.model
    _check(model.weighting, trainer.optimizer, model.state_dict())
