"""Evaluation of the scene network over a split: metrics, instance AP, the checkpoint criterion.

Metrics are accumulated over the whole split (summed over processes under DDP), never averaged
per image. The network sees each image at its training size; its outputs are brought back to
the ground truth's size as the official benchmark does (see ``inference.postprocess``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from uncertainty_mtl._procs import loader_worker_options
from uncertainty_mtl.config import TrainConfig
from uncertainty_mtl.data.cityscapes import CityscapesScenes
from uncertainty_mtl.data.prepare import scene_frames
from uncertainty_mtl.engine.builders import autocast
from uncertainty_mtl.engine.cost import Phases
from uncertainty_mtl.engine.distributed import Process, all_gather_objects, broadcast_object
from uncertainty_mtl.errors import DataError
from uncertainty_mtl.inference.instance_ap import instance_ap
from uncertainty_mtl.inference.postprocess import instances_from_outputs, upsample_outputs
from uncertainty_mtl.metrics import SceneMetrics
from uncertainty_mtl.models.multitask import MultiTaskNet
from uncertainty_mtl.tasks.semantic import IGNORE_INDEX

__all__ = [
    "CHECKPOINT_CRITERION",
    "checkpoint_score",
    "eval_loader",
    "evaluate",
    "final_evaluation",
    "input_size_of",
]

CHECKPOINT_CRITERION = (
    "mean over the trained tasks of the validation error divided by that task's error at the "
    "first validation (semantic: 100 - mIoU; instance: mean offset error; depth: mean inverse-"
    "depth error); lower is better"
)


def checkpoint_score(errors: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """:data:`CHECKPOINT_CRITERION` of one validation's per-task errors."""
    return sum(errors[t] / max(reference[t], 1e-12) for t in errors) / len(errors)


class _EvalFrames(Dataset[tuple[Tensor, dict[str, Tensor], str]]):
    """Frames of a split with the path of their instanceIds file (for instance AP)."""

    def __init__(self, frames: CityscapesScenes, indices: list[int]) -> None:
        self.frames, self.indices = frames, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor], str]:
        image, targets = self.frames[self.indices[i]]
        path = self.frames.samples[self.indices[i]].instance_ids
        return image, targets, str(path or "")


def eval_loader(
    config: TrainConfig,
    split: str,
    proc: Process,
    frames: CityscapesScenes | None = None,
    *,
    progress: bool = True,
) -> tuple[DataLoader[Any], int]:
    """This process's share of a split (all of it, or its first ``eval.max_frames``), and the
    number of frames evaluated over all processes (``progress``: a bar while the split's cache
    is built)."""
    if frames is None:
        frames = scene_frames(
            config.data, config.trained_tasks, split, train=False, progress=progress
        )
    indices = list(range(len(frames)))[: config.eval.max_frames]
    loader = DataLoader(
        _EvalFrames(frames, indices[proc.rank :: proc.world]),
        batch_size=config.eval.batch_size,
        num_workers=config.data.workers,
        **loader_worker_options(config.data.workers),
    )
    return loader, len(indices)


#: Per task, the target that says which pixels are labelled, and the unlabelled value.
_LABELLED = {
    "semantic": ("semantic", IGNORE_INDEX),
    "instance": ("instance_mask", False),
    "depth": ("depth_mask", False),
}


def checked_split(
    config: TrainConfig, split: str, key: str, *, progress: bool = True
) -> CityscapesScenes:
    """The frames of ``split`` (the value of the config key ``key``), checked before training:
    the split exists, its files read, and its evaluated frames have labelled pixels of every
    trained task (without them a metric is NaN; on the select split, no checkpoint could be
    chosen).

    Raises:
        DataError: naming the key and the split, and the file or the tasks without pixels.
    """
    try:
        frames = scene_frames(
            config.data, config.trained_tasks, split, train=False, progress=progress
        )
    except DataError as err:
        raise DataError(f"{key} {split!r}: {err}") from err
    indices = list(range(len(frames)))[: config.eval.max_frames]
    missing = set(config.trained_tasks)
    for index in indices:
        targets = frames.targets(frames.arrays(index))
        for task in list(missing):
            name, unlabelled = _LABELLED[task]
            if bool((targets[name] != unlabelled).any()):
                missing.discard(task)
        if not missing:
            return frames
    raise DataError(
        f"{key} {split!r}: no labelled {' or '.join(sorted(missing))} pixels in its "
        f"{len(indices)} evaluated frame(s) under {config.data.root}; every trained task needs "
        "some (is it a split without public labels, like Cityscapes' test?)"
    )


def input_size_of(config: TrainConfig, frames: CityscapesScenes) -> list[int] | None:
    """The size the network sees: ``data.size``; none (any size) when it was trained on crops;
    else the training frames' size."""
    if config.data.size:
        return list(config.data.size)
    if config.data.crop:
        return None
    return list(frames[0][0].shape[-2:])


@torch.no_grad()
def evaluate(
    model: MultiTaskNet,
    loader: DataLoader[Any],
    *,
    device: torch.device,
    amp_context: AbstractContextManager[Any] | None = None,
    input_size: Sequence[int] | None = None,
    cluster_method: str | None = None,
    depth_scale: float = 1.0,
    progress: bool = False,
    desc: str = "evaluating",
    channels_last: bool = False,
    phases: Phases | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` over every frame of ``loader`` (summed over processes under DDP).

    The network sees each image resized to ``input_size`` (as is when ``None``); its outputs are
    brought back to the ground truth's size. With ``cluster_method`` and both semantic and
    instance heads, instances are clustered and scored by the official AP (their seconds go to
    ``phases`` as ``clustering`` and ``instance_ap``).
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    metrics = SceneMetrics(model.tasks, device=device)
    with_ap = cluster_method is not None and {"semantic", "instance"} <= set(model.tasks)
    predicted: list[tuple[str, Any]] = []
    phases = phases if phases is not None else Phases()
    for images, targets, paths in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
        size = tuple(images.shape[-2:])
        if input_size is not None and tuple(input_size) != size:
            images = F.interpolate(
                images, size=tuple(input_size), mode="bilinear", antialias=True, align_corners=False
            )
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with amp_context or nullcontext():
            outputs = {k: v.float() for k, v in model(images).items()}
        if "depth" in outputs and depth_scale != 1.0:
            outputs["depth"] = outputs["depth"] / depth_scale  # metrics in pixels
        metrics.update(upsample_outputs(outputs, size), targets)
        if with_ap:
            assert cluster_method is not None
            with phases("clustering"):
                maps = instances_from_outputs(outputs, size, method=cluster_method)
            predicted += list(zip(paths, maps, strict=True))
    metrics.all_reduce()
    model.train(was_training)
    result = metrics.compute()
    if with_ap:
        with phases("instance_ap"):
            result.update(_instance_ap(predicted))
    return result


def _instance_ap(predicted: list[tuple[str, Any]]) -> dict[str, Any]:
    """AP of all processes' predictions, computed on rank 0 and shared."""
    everything = [p for part in all_gather_objects(predicted) for p in part]
    main = not dist.is_initialized() or dist.get_rank() == 0
    shared: dict[str, Any] = broadcast_object(instance_ap(everything) if main else None)
    return shared


def final_evaluation(
    config: TrainConfig,
    model: MultiTaskNet,
    proc: Process,
    *,
    kept: str,
    step: int | None,
    input_size: list[int] | None,
    split: str | None = None,
    progress: bool = True,
    cluster_method: str | None = None,
    frames: CityscapesScenes | None = None,
    phases: Phases | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``results.json``: the kept checkpoint's metrics on ``split`` (default:
    the report split; its data set ``frames`` when already built) and what they were measured
    on; ``metrics``: already measured there (by the last validation), not measured again."""
    split = split or config.eval.report_split
    method = cluster_method or config.eval.cluster_method
    loader, count = eval_loader(config, split, proc, frames, progress=progress and proc.main)
    if metrics is None:
        metrics = evaluate(
            model,
            loader,
            device=proc.device,
            input_size=input_size,
            cluster_method=method,
            depth_scale=config.data.depth_scale,
            amp_context=autocast(config, proc.device),
            progress=progress and proc.main,
            desc=f"evaluating {split}",
            channels_last=config.run.channels_last,
            phases=phases,
        )
    image, _, _ = loader.dataset[0]
    return {
        "split": split,
        "checkpoint": kept,
        "step": step,
        "frames": count,
        "resolution": list(image.shape[-2:]),
        "input_resolution": input_size or list(image.shape[-2:]),
        "cluster_method": method if {"semantic", "instance"} <= set(model.tasks) else None,
        "tasks": list(model.tasks),
        "metrics": metrics,
    }
