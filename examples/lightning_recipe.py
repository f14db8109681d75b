"""The uncertainty weighting in a PyTorch Lightning module: a recipe that runs as it is.

    pip install . lightning   # in a clone of uncertainty-mtl
    python examples/lightning_recipe.py

What matters for Lightning:

* the weighting is a submodule of the ``LightningModule``: Lightning moves it to the device,
  checkpoints save its log-variances, and under ``strategy="ddp"`` DDP keeps them in step on
  every rank like any other parameter;
* ``configure_optimizers`` builds the optimiser from ``parameter_groups``, so that weight decay
  never touches the log-variances;
* ``training_step`` returns the weighted total and lets automatic optimisation do the rest
  (the total may be negative: it is a likelihood, not an error).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from uncertainty_mtl import UncertaintyWeighting, parameter_groups


class TwoTaskNet(nn.Module):
    """A shared trunk, a classification head and a regression head."""

    def __init__(self, inputs: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(inputs, 32), nn.ReLU())
        self.classify = nn.Linear(32, classes)
        self.regress = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"class": self.classify(h), "value": self.regress(h)[:, 0]}


class MultiTaskModule(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.net = TwoTaskNet()
        # cross-entropy is a softmax likelihood, the squared error a Gaussian one
        self.weighting = UncertaintyWeighting({"class": "softmax", "value": "gaussian"})

    def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
        x, label, value = batch
        out = self.net(x)
        losses = {
            "class": F.cross_entropy(out["class"], label),
            "value": F.mse_loss(out["value"], value),
        }
        total = self.weighting(losses)
        self.log_dict(self.weighting.log_dict())  # log_var/<task>, var/<task>, weight/<task>
        return total

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = parameter_groups(self.net, self.weighting, lr=self.lr, weight_decay=1e-4)
        return torch.optim.SGD(groups, lr=self.lr, momentum=0.9)


def toy_data(n: int = 512, seed: int = 0) -> TensorDataset:
    """Inputs, a class and a value that depend on them; the value is noisier than the class."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    label = (x[:, :2] > 0).long() @ torch.tensor([1, 2])
    value = x[:, 2] * 3 + torch.randn(n, generator=g)
    return TensorDataset(x, label, value)


def main(max_steps: int = 200) -> MultiTaskModule:
    L.seed_everything(0, verbose=False)
    module = MultiTaskModule()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",  # "gpu" and strategy="ddp" for several GPUs: nothing else changes
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(toy_data(), batch_size=32, shuffle=True))
    return module


if __name__ == "__main__":
    trained = main()
    print({k: round(v, 3) for k, v in trained.weighting.log_dict().items()})
