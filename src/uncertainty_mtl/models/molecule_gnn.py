"""QM9's graph network for users with a GPU: PyTorch Geometric's SchNet (Schütt et al., 2017)
as the shared trunk, one linear head per target (``pip install 'uncertainty-mtl[gnn]'``).

The network is PyG's own :class:`torch_geometric.nn.models.SchNet`; two things are ours:

* its last per-atom layer is widened from one output to ``hidden`` and summed over each
  molecule, so that the sum is a shared code that every target's head reads (the weighting
  methods need a shared representation and one head per task);
* the neighbour list (:class:`MoleculeGraph`): PyG's ``radius_graph`` needs the compiled
  ``pyg-lib`` or ``torch-cluster``, which are not on PyPI for every platform. A QM9 molecule has at
  most 29 atoms, so every pair of atoms of a molecule is tried, in one batched distance
  computation, on any device.

Its inputs are the padded arrays the study keeps: nuclear charges ``[B, A]`` (0 past a molecule's
last atom) and positions ``[B, A, 3]`` in Å.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from uncertainty_mtl.errors import ConfigError

__all__ = ["MoleculeGraph", "SchNetMultiTask"]


class MoleculeGraph(nn.Module):
    """Every ordered pair of distinct atoms of the same molecule closer than ``cutoff`` Å.

    Called as SchNet calls its ``interaction_graph``: with the atoms' positions ``[N, 3]`` and
    their molecule index ``[N]`` (sorted, as a batch of molecules gives it); returns
    ``edge_index [2, E]`` and the distances ``[E]``.
    """

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        counts = torch.bincount(batch)
        start = torch.cumsum(counts, 0) - counts
        width = int(counts.max())
        slot = torch.arange(width, device=pos.device)
        index = start[:, None] + slot[None, :]  # [molecules, width]: each atom's row
        real = slot[None, :] < counts[:, None]
        pairs = (
            real[:, :, None]
            & real[:, None, :]
            & ~torch.eye(width, dtype=torch.bool, device=pos.device)
        )
        source = index[:, :, None].expand_as(pairs)[pairs]
        target = index[:, None, :].expand_as(pairs)[pairs]
        distance = (pos[source] - pos[target]).norm(dim=-1)
        near = distance < self.cutoff
        return torch.stack([source[near], target[near]]), distance[near]


class SchNetMultiTask(nn.Module):
    """``(charges, positions) -> SchNet -> per-molecule code -> one Linear head per task``.

    Args:
        tasks: the targets, one head each.
        hidden: SchNet's hidden channels and filters, and the code's width.
        interactions: interaction blocks.
        cutoff: the neighbour distance in Å.
        gaussians: the distance expansion's Gaussians.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        hidden: int = 128,
        interactions: int = 6,
        cutoff: float = 10.0,
        gaussians: int = 50,
    ) -> None:
        super().__init__()
        try:
            from torch_geometric.nn.models import SchNet
        except ImportError:
            from uncertainty_mtl._install import install_command

            raise ConfigError(
                f"model=schnet needs PyTorch Geometric: {install_command('gnn')}"
            ) from None
        if not tasks or hidden < 2 or interactions < 1:
            raise ValueError("SchNetMultiTask needs a task, hidden >= 2 and an interaction")
        self.tasks = tuple(tasks)
        self.schnet = SchNet(
            hidden_channels=hidden,
            num_filters=hidden,
            num_interactions=interactions,
            num_gaussians=gaussians,
            cutoff=cutoff,
            interaction_graph=MoleculeGraph(cutoff),
            readout="add",
        )
        self.schnet.lin2 = nn.Linear(hidden // 2, hidden)  # a code per atom, summed per molecule
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, 1) for t in self.tasks})

    def features(self, inputs: tuple[Tensor, Tensor]) -> Tensor:
        """The shared code of each molecule, ``[B, hidden]``."""
        charges, positions = inputs
        present = charges > 0
        batch = torch.repeat_interleave(
            torch.arange(len(charges), device=charges.device), present.sum(1)
        )
        out: Tensor = self.schnet(charges[present], positions[present], batch)
        return out

    def outputs(self, code: Tensor) -> dict[str, Tensor]:
        """Each head's prediction, ``{task: [B]}``."""
        return {t: head(code).squeeze(-1) for t, head in self.heads.items()}

    def forward(self, inputs: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        return self.outputs(self.features(inputs))

    def last_shared_layer(self) -> nn.Module:
        """SchNet's per-atom output layer (GradNorm balances the task gradients there)."""
        layer: nn.Module = self.schnet.lin2
        return layer

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.schnet.parameters())
