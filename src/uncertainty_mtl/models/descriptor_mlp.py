"""QM9's CPU-cheap default network: a shared MLP over a fixed-size molecular descriptor (the
Coulomb-matrix eigenvalues), one linear head per target.

Its numbers are not comparable with the graph networks of the QM9 literature (SchNet, DimeNet++,
the message-passing networks of Nash-MTL's and FAMO's tables): a descriptor of 29 numbers loses
most of the geometry. It trains in minutes on a CPU, which is what a study of many seeds and
methods needs here; what it tests is how each weighting treats eleven targets in eleven units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["DescriptorMLP"]


class DescriptorMLP(nn.Module):
    """``features -> shared MLP (SiLU) -> one Linear head per task``.

    Args:
        in_features: the descriptor's length.
        tasks: the targets, one head each.
        hidden: the shared layers' widths.
        mean: per-feature mean of the training split (the input is standardised inside).
        std: per-feature standard deviation of the training split (0 is treated as 1).
    """

    def __init__(
        self,
        in_features: int,
        tasks: Sequence[str],
        *,
        hidden: Sequence[int] = (256, 256, 256),
        mean: Tensor | None = None,
        std: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not tasks or not hidden:
            raise ValueError("DescriptorMLP needs at least one task and one hidden layer")
        self.tasks = tuple(tasks)
        mean = torch.zeros(in_features) if mean is None else mean.float()
        std = torch.ones(in_features) if std is None else std.float()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", torch.where(std > 0, std, torch.ones_like(std)))
        self.mean: Tensor
        self.std: Tensor
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.SiLU()]
            width = size
        self.encoder = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({t: nn.Linear(width, 1) for t in self.tasks})

    def features(self, x: Tensor) -> Tensor:
        """The shared representation every head reads, ``[B, hidden[-1]]``."""
        return self.encoder((x - self.mean) / self.std)  # type: ignore[no-any-return]

    def outputs(self, code: Tensor) -> dict[str, Tensor]:
        """Each head's prediction, ``{task: [B]}``."""
        return {t: head(code).squeeze(-1) for t, head in self.heads.items()}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.outputs(self.features(x))

    def last_shared_layer(self) -> nn.Module:
        """The encoder's last linear layer (GradNorm balances the task gradients there)."""
        return [m for m in self.encoder.modules() if isinstance(m, nn.Linear)][-1]

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())
