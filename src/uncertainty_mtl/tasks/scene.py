"""The three scene tasks together: their losses and likelihoods, by task name."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from uncertainty_mtl.tasks import depth, instance, semantic

__all__ = ["SCENE_LIKELIHOODS", "SCENE_LOSSES", "scene_losses"]

SCENE_LOSSES: dict[str, Callable[[Tensor, dict[str, Tensor]], Tensor]] = {
    "semantic": semantic.semantic_loss,
    "instance": instance.instance_loss,
    "depth": depth.depth_loss,
}
SCENE_LIKELIHOODS = {
    "semantic": semantic.LIKELIHOOD,
    "instance": instance.LIKELIHOOD,
    "depth": depth.LIKELIHOOD,
}


def scene_losses(
    outputs: dict[str, Tensor], targets: dict[str, Tensor], tasks: Sequence[str]
) -> dict[str, Tensor]:
    """``{task: 0-dim loss}`` for ``tasks`` (each a batch mean over its labelled pixels)."""
    return {task: SCENE_LOSSES[task](outputs[task], targets) for task in tasks}
