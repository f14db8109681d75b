"""The uncertainty weighting with a Hugging Face ``Trainer``: a recipe that runs as it is.

    pip install . transformers accelerate   # in a clone of uncertainty-mtl
    python examples/hf_trainer_recipe.py

What matters for the ``Trainer``:

* the weighting lives inside the model the ``Trainer`` gets, so that it is moved to the device,
  saved with the model and wrapped by DDP with it;
* ``compute_loss`` returns the weighted total of the task losses;
* the optimiser is built from ``parameter_groups`` and passed in ``optimizers=``: the
  ``Trainer``'s own optimiser would put weight decay on the log-variances (they are not biases
  or norms) and give them the network's learning rate schedule without asking.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from uncertainty_mtl import UncertaintyWeighting, parameter_groups


class TwoTaskModel(nn.Module):
    """A shared trunk, two heads, and the weighting of their losses."""

    def __init__(self, inputs: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(inputs, 32), nn.ReLU())
        self.classify = nn.Linear(32, classes)
        self.regress = nn.Linear(32, 1)
        self.weighting = UncertaintyWeighting({"class": "softmax", "value": "gaussian"})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"class": self.classify(h), "value": self.regress(h)[:, 0]}


class MultiTaskTrainer(Trainer):
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        out = model(inputs["x"])
        losses = {
            "class": F.cross_entropy(out["class"], inputs["category"]),
            "value": F.mse_loss(out["value"], inputs["value"]),
        }
        weighting = getattr(model, "module", model).weighting  # under DDP: the wrapped model's
        total = weighting(losses)
        return (total, out) if return_outputs else total


class ToyData(Dataset[dict[str, torch.Tensor]]):
    """Inputs, a class and a value that depend on them; the value is noisier than the class."""

    def __init__(self, n: int = 512, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 16, generator=g)
        self.label = (self.x[:, :2] > 0).long() @ torch.tensor([1, 2])
        self.value = self.x[:, 2] * 3 + torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        # not "label": the Trainer's collator renames that key to "labels"
        return {"x": self.x[i], "category": self.label[i], "value": self.value[i]}


def main(max_steps: int = 200, out: str | None = None) -> MultiTaskTrainer:
    torch.manual_seed(0)
    model = TwoTaskModel()
    # the network's parameters decay, the log-variances do not
    backbone = nn.ModuleList([model.trunk, model.classify, model.regress])
    groups = parameter_groups(backbone, model.weighting, lr=0.05, weight_decay=1e-4)
    optimiser = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=out or tmp,
            max_steps=max_steps,
            per_device_train_batch_size=32,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            remove_unused_columns=False,  # the batches are our dicts, not a tokenizer's
            seed=0,
        )
        trainer = MultiTaskTrainer(
            model=model,
            args=args,
            train_dataset=ToyData(),
            optimizers=(optimiser, None),  # None: the Trainer's linear schedule
        )
        trainer.train()
    return trainer


if __name__ == "__main__":
    trained = main().model
    print({k: round(v, 3) for k, v in trained.weighting.log_dict().items()})
