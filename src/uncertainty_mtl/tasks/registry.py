"""Every task the package knows, in one place: its loss, likelihood, metric and head.

Everything that needs a per-task fact (the scene network's decoders, the losses, the default
likelihood of the learned weighting, the config's allowed values, the metric a study selects
on) reads it here, so adding a task is one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from uncertainty_mtl.tasks import classification, depth, instance, reconstruction, semantic

__all__ = [
    "SCENE_TASKS",
    "TASKS",
    "TaskSpec",
    "scene_losses",
    "task_errors",
]


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    Attributes:
        name: the task's key in outputs, losses, weights and configs.
        likelihood: the term :class:`~uncertainty_mtl.weighting.UncertaintyWeighting` uses by
            default (``softmax``, ``laplace``, ``gaussian``).
        likelihoods: the likelihoods a config may choose for it.
        event_dims: scalars the loss sums per element (instance: ``|dx| + |dy|``, 2). The
            likelihood's penalty is ``(d/2)·s``; the configured weighting takes it
            from here.
        metric: the key of its headline metric in a results' ``metrics``.
        higher_is_better: whether a larger ``metric`` is better (then it is a percentage, and
            its error is ``100 - metric``).
        head_channels: output channels of its decoder in the scene network (``None``: not a
            scene task).
        loss: the scene loss ``(output, targets) -> 0-dim`` (``None``: not a scene task).
    """

    name: str
    likelihood: str
    likelihoods: tuple[str, ...]
    event_dims: int
    metric: str
    higher_is_better: bool
    head_channels: int | None = None
    loss: Callable[[Tensor, dict[str, Tensor]], Tensor] | None = None

    def error(self, metrics: Mapping[str, Any]) -> float:
        """The task's error (lower is better) from a results' metrics."""
        value = float(metrics[self.metric])
        return 100.0 - value if self.higher_is_better else value


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "semantic",
            semantic.LIKELIHOOD,
            ("softmax", "tempered_softmax"),
            event_dims=1,
            metric="miou",
            higher_is_better=True,
            head_channels=19,
            loss=semantic.semantic_loss,
        ),
        TaskSpec(
            "instance",
            instance.LIKELIHOOD,
            ("laplace", "gaussian"),
            event_dims=2,
            metric="instance_mean_error_px",
            higher_is_better=False,
            head_channels=2,
            loss=instance.instance_loss,
        ),
        TaskSpec(
            "depth",
            depth.LIKELIHOOD,
            ("laplace", "gaussian"),
            event_dims=1,
            metric="depth_mean_error_px",
            higher_is_better=False,
            head_channels=1,
            loss=depth.depth_loss,
        ),
        TaskSpec(
            "classification",
            classification.LIKELIHOOD,
            ("softmax",),
            event_dims=1,
            metric="accuracy",
            higher_is_better=True,
        ),
        TaskSpec(
            "reconstruction",
            reconstruction.LIKELIHOOD,
            ("laplace", "gaussian"),
            event_dims=1,
            metric="reconstruction_l1",
            higher_is_better=False,
        ),
    )
}

#: The scene tasks, in the order of the network's outputs and of every table.
SCENE_TASKS: tuple[str, ...] = tuple(t for t, spec in TASKS.items() if spec.head_channels)


def task_errors(metrics: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, float]:
    """Each task's error (lower is better): ``100 - metric`` for percentages, else the metric."""
    return {t: TASKS[t].error(metrics) for t in tasks}


def scene_losses(
    outputs: dict[str, Tensor], targets: dict[str, Tensor], tasks: Sequence[str]
) -> dict[str, Tensor]:
    """``{task: 0-dim loss}`` for scene ``tasks`` (each a batch mean over its labelled pixels)."""
    losses = {}
    for task in tasks:
        loss = TASKS[task].loss
        if loss is None:
            raise ValueError(f"{task!r} is not a scene task; scene tasks are {SCENE_TASKS}")
        losses[task] = loss(outputs[task], targets)
    return losses
