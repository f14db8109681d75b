"""Training and evaluation of the scene network (SPEC §7).

A run directory holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one record per logging step
and per validation), ``results.json`` (final evaluation), ``checkpoints/last.pt`` and
``checkpoints/best.pt``, and TensorBoard event files.

Determinism: the batches of epoch ``e`` are a permutation seeded by ``(seed, e)``, sharded over
the processes, and each frame's augmentation is seeded by ``(seed, e, index)``. So a resumed run
sees exactly the batches an uninterrupted one would, whatever the number of loader workers.

The best checkpoint is chosen on ``eval.select_split`` by :data:`SELECTION_CRITERION`; the final
evaluation is on ``eval.report_split``, which nothing during training looks at.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from uncertainty_mtl._io import atomic_write, read_json, write_json, write_text
from uncertainty_mtl.config import ConfigError, TrainConfig, config_to_dict, load_config
from uncertainty_mtl.data import transforms as T
from uncertainty_mtl.data.cityscapes import CityscapesScenes
from uncertainty_mtl.inference.instance_ap import instance_ap
from uncertainty_mtl.inference.predict import instances_from_outputs, upsample_outputs
from uncertainty_mtl.metrics import SceneMetrics
from uncertainty_mtl.models.multitask import MultiTaskNet
from uncertainty_mtl.tasks.scene import SCENE_LIKELIHOODS, scene_losses
from uncertainty_mtl.weighting import (
    FixedWeighting,
    NonFiniteLossError,
    UncertaintyWeighting,
    Weighting,
    parameter_groups,
)

__all__ = [
    "SELECTION_CRITERION",
    "NetWithLoss",
    "TrainingError",
    "build_model",
    "build_weighting",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_run",
    "load_run",
    "selection_errors",
    "shutdown_distributed",
    "train",
]

SELECTION_CRITERION = (
    "mean over the trained tasks of the validation error divided by that task's error at the "
    "first validation (semantic: 100 - mIoU; instance: mean offset error; depth: mean inverse-"
    "depth error); lower is better"
)


class TrainingError(RuntimeError):
    """Training stopped; the message says why and at which step."""


# ---------------------------------------------------------------------------------------------
# Building blocks.


def build_model(config: TrainConfig) -> MultiTaskNet:
    m = config.model
    return MultiTaskNet(
        config.trained_tasks,
        backbone=m.backbone,
        pretrained=m.pretrained,
        aspp_rates=m.aspp_rates,
        aspp_channels=m.aspp_channels,
        decoder_channels=m.decoder_channels,
        aspp_dropout=m.aspp_dropout,
        small_width=m.small_width,
    )


def build_weighting(config: TrainConfig) -> Weighting:
    w = config.weighting
    if w.kind == "fixed":
        return FixedWeighting({t: w.weights[t] for t in config.trained_tasks})
    return UncertaintyWeighting(
        {t: w.likelihoods.get(t, SCENE_LIKELIHOODS[t]) for t in config.trained_tasks},
        init_log_var=w.init_log_var,
        convention=w.convention,
        regulariser=w.regulariser,
    )


class NetWithLoss(nn.Module):
    """The network and the weighting in one module, so that DDP all-reduces the log-variances'
    gradients with the network's (the one right way; see the README).

    Args:
        model: the network.
        weighting: the loss weighting.
        depth_scale: the network learns inverse depth in units of ``depth_scale`` pixels.
    """

    def __init__(self, model: MultiTaskNet, weighting: Weighting, *, depth_scale: float = 1.0):
        super().__init__()
        self.model = model
        self.weighting = weighting
        self.depth_scale = depth_scale
        self.tempered = isinstance(weighting, UncertaintyWeighting) and (
            weighting.likelihoods.get("semantic") == "tempered_softmax"
        )

    def forward(
        self, images: Tensor, targets: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        outputs = self.model(images)
        if self.depth_scale != 1.0 and "inverse_depth" in targets:
            targets = {**targets, "inverse_depth": targets["inverse_depth"] * self.depth_scale}
        if self.tempered:
            assert isinstance(self.weighting, UncertaintyWeighting)
            scale = self.weighting.logit_scale("semantic")
            outputs = {**outputs, "semantic": outputs["semantic"] * scale}
        losses = scene_losses(outputs, targets, self.model.tasks)
        return self.weighting(losses), losses


class _SeededFrames(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Seeds the random augmentation of frame ``i`` in epoch ``e`` with ``(seed, e, i)``."""

    def __init__(self, frames: CityscapesScenes, seed: int) -> None:
        self.frames = frames
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (what the transforms draw from): torch.manual_seed would
            # also seed every accelerator backend, ~100× slower, and it runs once per frame.
            torch.default_generator.manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
            )
            return self.frames[index]


def _epoch_batches(
    n: int, batch: int, world: int, rank: int, seed: int, epoch: int
) -> list[list[int]]:
    """This process's batches of one epoch (full global batches only)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    size = batch * world
    return [order[i + rank * batch : i + (rank + 1) * batch] for i in range(0, n - size + 1, size)]


@dataclass
class _Best:
    """The best validation so far: its criterion score, its step, and the per-task errors of
    the first validation that the criterion divides by."""

    score: float = math.inf
    step: int | None = None
    reference: dict[str, float] | None = None


@dataclass(frozen=True)
class _Process:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_process(device: str) -> _Process:
    """One process, or one rank of a ``torchrun`` job (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Process(0, 1, torch.device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return _Process(rank, world, torch.device("cuda", local))
    return _Process(rank, world, torch.device(device))


def shutdown_distributed(*, wait: bool = True) -> None:
    """Ends a distributed run cleanly: drops unreferenced DDP objects, waits for every rank
    (``wait``; not after a failure, when the other ranks may never arrive), destroys the process
    group. Left to interpreter shutdown, gloo's worker threads may still hold tensors and abort
    the process."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def _ensure_data(config: TrainConfig, proc: _Process) -> None:
    """Generates the synthetic city at ``data.root`` on first use (rank 0; others wait)."""
    d = config.data
    if d.synthetic and not (Path(d.root) / "leftImg8bit").is_dir() and proc.main:
        from uncertainty_mtl.data.synthetic import SynthConfig, generate_city

        synth = SynthConfig(height=d.synth_size[0], width=d.synth_size[1], seed=d.synth_seed,
                            split_sizes=d.synth_split_sizes)  # fmt: skip
        tqdm.write(f"generating the synthetic city in {d.root} (first use)")
        generate_city(d.root, synth, workers=os.cpu_count() or 1)
    if proc.world > 1:
        dist.barrier()


def _frames(config: TrainConfig, split: str, *, train: bool) -> CityscapesScenes:
    """A split's frames; training frames get the configured augmentation, evaluation frames
    keep the files' resolution (the network's input is resized in :func:`evaluate`)."""
    d = config.data
    steps: list[Any] = [T.Resize(d.size)] if d.size and train else []
    if train:
        if d.scale:
            steps.append(T.RandomScale(d.scale[0], d.scale[1]))
        if d.crop:
            steps.append(T.RandomCrop(d.crop))
        if d.flip:
            steps.append(T.RandomHorizontalFlip())
    return CityscapesScenes(
        d.root,
        split,
        tasks=config.trained_tasks,
        transform=T.Compose(steps) if steps else None,
        cache_dir=d.cache_dir,
    )


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


def _eval_loader(config: TrainConfig, split: str, proc: _Process) -> tuple[DataLoader[Any], int]:
    """This process's share of a split (all of it, or its first ``eval.max_frames``), and the
    number of frames evaluated over all processes."""
    frames = _frames(config, split, train=False)
    indices = list(range(len(frames)))[: config.eval.max_frames]
    loader = DataLoader(
        _EvalFrames(frames, indices[proc.rank :: proc.world]),
        batch_size=config.eval.batch_size,
        num_workers=config.data.workers,
    )
    return loader, len(indices)


def _input_size(config: TrainConfig, frames: CityscapesScenes) -> list[int] | None:
    """The size the network sees: ``data.size``; none (any size) when it was trained on crops;
    else the training frames' size."""
    if config.data.size:
        return list(config.data.size)
    if config.data.crop:
        return None
    return list(frames[0][0].shape[-2:])


def _autocast(config: TrainConfig, device: torch.device) -> AbstractContextManager[Any]:
    if not config.optim.amp:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def _to(
    device: torch.device, images: Tensor, targets: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    return images.to(device, non_blocking=True), {
        k: v.to(device, non_blocking=True) for k, v in targets.items()
    }


@torch.no_grad()
def evaluate(
    model: MultiTaskNet,
    loader: DataLoader[Any],
    *,
    device: torch.device,
    amp_context: AbstractContextManager[Any] | None = None,
    input_size: list[int] | None = None,
    cluster_method: str | None = None,
    depth_scale: float = 1.0,
    progress: bool = False,
    desc: str = "evaluating",
) -> dict[str, Any]:
    """Metrics of ``model`` over every frame of ``loader`` (summed over processes under DDP).

    The network sees each image resized to ``input_size`` (as is when ``None``); its outputs are
    brought back to the ground truth's size (see :func:`~uncertainty_mtl.inference.predict.
    upsample_outputs`). With ``cluster_method`` and both semantic and instance heads, instances
    are clustered and scored by the official AP (:mod:`~uncertainty_mtl.inference.instance_ap`).
    """
    was_training = model.training
    model.eval()
    metrics = SceneMetrics(model.tasks, device=device)
    with_ap = cluster_method is not None and {"semantic", "instance"} <= set(model.tasks)
    predicted: list[tuple[str, Any]] = []
    for images, targets, paths in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images, targets = _to(device, images, targets)
        size = tuple(images.shape[-2:])
        if input_size is not None and tuple(input_size) != size:
            images = F.interpolate(images, size=tuple(input_size), mode="bilinear",
                                   antialias=True, align_corners=False)  # fmt: skip
        with amp_context or nullcontext():
            outputs = {k: v.float() for k, v in model(images).items()}
        if "depth" in outputs and depth_scale != 1.0:
            outputs["depth"] = outputs["depth"] / depth_scale  # metrics in pixels
        metrics.update(upsample_outputs(outputs, size), targets)
        if with_ap:
            assert cluster_method is not None
            maps = instances_from_outputs(outputs, size, method=cluster_method)
            predicted += list(zip(paths, maps, strict=True))
    metrics.all_reduce()
    model.train(was_training)
    result = metrics.compute()
    if with_ap:
        result.update(_instance_ap(predicted))
    return result


def _instance_ap(predicted: list[tuple[str, Any]]) -> dict[str, Any]:
    """AP of all processes' predictions, computed on rank 0 and shared."""
    if not (dist.is_available() and dist.is_initialized()):
        return instance_ap(predicted)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, predicted)
    holder: list[Any] = [None]
    if dist.get_rank() == 0:
        holder[0] = instance_ap([p for part in gathered for p in part])
    dist.broadcast_object_list(holder)
    result: dict[str, Any] = holder[0]
    return result


def selection_errors(metrics: dict[str, Any], tasks: list[str]) -> dict[str, float]:
    """The per-task errors that :data:`SELECTION_CRITERION` combines."""
    keys = {"instance": "instance_mean_error_px", "depth": "depth_mean_error_px"}
    return {t: 100.0 - metrics["miou"] if t == "semantic" else metrics[keys[t]] for t in tasks}


# ---------------------------------------------------------------------------------------------
# Checkpoints.


def _save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict) and key != "weights":
            diffs += _config_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            diffs.append(f"{prefix}{key}: {x!r} -> {y!r}")
    return diffs


# ---------------------------------------------------------------------------------------------
# Training.


def _sync_buffers(module: nn.Module, proc: _Process) -> None:
    """Copies rank 0's buffers (BatchNorm statistics) to every rank. DDP broadcasts them only at
    the start of a forward pass, so after a step each rank holds those of its own batch."""
    if proc.world > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def _checksum(module: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in module.state_dict().values()
                     if p.is_floating_point()))  # fmt: skip


def train(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Trains ``config`` into the run directory ``out`` and evaluates the kept checkpoint on the
    report split.

    Args:
        config: the resolved configuration.
        out: the run directory.
        resume: continue the run in ``out`` from ``checkpoints/last.pt``.
        progress: show progress bars.
        on_step: called with the step number after every step (e.g. to stop a test run).

    Raises:
        ConfigError: ``out`` already holds a run (without ``resume``), or holds a run of another
            configuration (with it).
        TrainingError: a task's loss became non-finite (the message names the task and the
            step; the last good checkpoint stays).

    Returns:
        The content of ``results.json``.
    """
    out = Path(out)
    checkpoints = out / "checkpoints"
    last_path, best_path = checkpoints / "last.pt", checkpoints / "best.pt"
    resolved = config_to_dict(config)
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"--resume: {last_path} does not exist; nothing to resume")
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        diffs = _config_differences(saved, resolved)
        if diffs:
            raise ConfigError(f"--resume: {out} was trained with another config: {diffs}")
    elif last_path.exists() or (out / "results.json").exists():
        raise ConfigError(f"{out} already holds a run; use --resume or another --out")

    proc = _setup_process(config.run.device)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    _ensure_data(config, proc)
    tasks = config.trained_tasks
    per_rank_batch, remainder = divmod(config.optim.batch_size, proc.world)
    if remainder or per_rank_batch < 1:
        raise ConfigError(
            f"optim.batch_size {config.optim.batch_size} must be a multiple of the number of "
            f"processes ({proc.world})"
        )
    train_frames = _frames(config, config.data.train_split, train=True)
    seeded = _SeededFrames(train_frames, config.run.seed)
    batches_per_epoch = len(train_frames) // config.optim.batch_size
    if batches_per_epoch < 1:
        raise ConfigError(
            f"the {config.data.train_split} split has {len(train_frames)} frames, fewer than "
            f"one batch of {config.optim.batch_size}"
        )
    input_size = _input_size(config, train_frames)
    select = config.eval.select_split
    select_loader = _eval_loader(config, select, proc)[0] if select else None

    torch.manual_seed(config.run.seed)
    model = build_model(config).to(proc.device)
    weighting = build_weighting(config).to(proc.device)
    if config.model.sync_bn and proc.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    joint: nn.Module = NetWithLoss(model, weighting, depth_scale=config.data.depth_scale)
    if proc.world > 1:
        joint = nn.parallel.DistributedDataParallel(
            joint, device_ids=[proc.device.index] if proc.device.type == "cuda" else None
        )
    optimiser = torch.optim.SGD(
        parameter_groups(model, weighting, lr=config.optim.lr,
                         weight_decay=config.optim.weight_decay, weighting_lr=config.weighting.lr),
        lr=config.optim.lr, momentum=config.optim.momentum, nesterov=config.optim.nesterov,
    )  # fmt: skip
    steps, power = config.optim.steps, config.optim.poly_power
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: max(0.0, 1.0 - s / steps) ** power
    )
    scaler = torch.amp.GradScaler("cuda", enabled=config.optim.amp and proc.device.type == "cuda")
    step, best = 0, _Best()
    saved_step: int | None = None
    if resume:
        state = torch.load(last_path, map_location=proc.device, weights_only=False)
        model.load_state_dict(state["model"])
        weighting.load_state_dict(state["weighting"])
        optimiser.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        step, best = state["step"], _Best(**state["best"])
        saved_step = step

    writer = None
    if proc.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        _truncate_log(out / "metrics.jsonl", step)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=step or None)

    def log(record: dict[str, Any]) -> None:
        if not proc.main:
            return
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        assert writer is not None
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                writer.add_scalar(key, value, record["step"])

    def save_last() -> None:
        nonlocal saved_step
        saved_step = step
        if proc.main:
            _save(last_path, {
                "model": model.state_dict(), "weighting": weighting.state_dict(),
                "optimizer": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "rng": _rng_state(),
                "best": dataclasses.asdict(best), "input_size": input_size,
                "config": resolved,
            })  # fmt: skip

    def validate() -> None:
        assert select_loader is not None
        _sync_buffers(model, proc)
        metrics = evaluate(model, select_loader, device=proc.device, input_size=input_size,
                           depth_scale=config.data.depth_scale,
                           amp_context=_autocast(config, proc.device))  # fmt: skip
        errors = selection_errors(metrics, tasks)
        if best.reference is None:
            best.reference = errors
        score = sum(errors[t] / max(best.reference[t], 1e-12) for t in tasks) / len(tasks)
        scalars = {f"{select}/{k}": v for k, v in metrics.items() if not isinstance(v, dict)}
        log({"step": step, "split": select, "criterion": score, **scalars})
        if score < best.score:
            best.score, best.step = score, step
            if proc.main:
                _save(best_path, {"model": model.state_dict(), "weighting": weighting.state_dict(),
                                  "step": step, "score": score, "metrics": metrics,
                                  "input_size": input_size})  # fmt: skip

    joint.train()
    start_time = time.perf_counter()
    bar = tqdm(total=steps, initial=step, desc=f"training {out.name}", unit="step",
               disable=not (progress and proc.main))  # fmt: skip
    while step < steps:
        epoch, position = divmod(step, batches_per_epoch)
        seeded.epoch = epoch
        batches = _epoch_batches(len(seeded), per_rank_batch, proc.world, proc.rank,
                                 config.run.seed, epoch)[position:]  # fmt: skip
        loader = DataLoader(seeded, batch_sampler=batches, num_workers=config.data.workers,
                            pin_memory=proc.device.type == "cuda")  # fmt: skip
        for images, targets in loader:
            images, targets = _to(proc.device, images, targets)
            try:
                with _autocast(config, proc.device):
                    total, losses = joint(images, targets)
            except NonFiniteLossError as err:
                kept = "none yet" if saved_step is None else f"{last_path} (step {saved_step})"
                raise TrainingError(
                    f"step {step + 1}: {err}; training stopped, last good checkpoint: {kept}"
                ) from err
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimiser)
            scaler.update()
            lr = optimiser.param_groups[0]["lr"]  # the rate this step used
            scheduler.step()
            step += 1
            bar.update()
            if step % config.run.log_every == 0 or step == steps:
                record = {
                    "step": step, "epoch": epoch,
                    **{f"loss/{t}": float(v.detach()) for t, v in losses.items()},
                    "loss/total": float(total.detach()), **weighting.log_dict(),
                    "lr": lr,
                }  # fmt: skip
                log(record)
                shown = {t: f"{record[f'loss/{t}']:.3g}" for t in tasks}
                shown.update({f"σ²{t[:3]}": f"{v:.3g}" for t, v in weighting.variances().items()})
                bar.set_postfix(shown)
            if select_loader is not None and (step % config.eval.every == 0 or step == steps):
                validate()
            if step % config.run.checkpoint_every == 0 or step == steps:
                save_last()
            if on_step is not None:
                on_step(step)
            if step >= steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - start_time

    distributed = None
    if proc.world > 1:
        _sync_buffers(model, proc)
        sums: list[Any] = [None] * proc.world
        dist.all_gather_object(sums, [_checksum(model), weighting.log_variances()])
        distributed = {"world_size": proc.world, "per_rank": sums,
                       "identical_on_all_ranks": all(s == sums[0] for s in sums)}  # fmt: skip
    kept = "best" if best.step is not None else "last"
    if kept == "best":
        state = (
            torch.load(best_path, map_location=proc.device, weights_only=False)
            if proc.main
            else None
        )
        if proc.world > 1:
            holder = [state]
            dist.broadcast_object_list(holder)
            state = holder[0]
        assert state is not None
        model.load_state_dict(state["model"])
        weighting.load_state_dict(state["weighting"])
    results = _final_evaluation(config, model, proc, kept=kept, input_size=input_size,
                                step=best.step if kept == "best" else step,
                                progress=progress)  # fmt: skip
    results["training"] = {
        "steps": steps,
        "seconds_this_session": train_seconds,
        "selection_split": select,
        "selection_criterion": SELECTION_CRITERION,
        "best_step": best.step,
        "weighting_at_kept_checkpoint": weighting.log_dict(),
    }
    if distributed:
        results["distributed"] = distributed
    if proc.main:
        write_json(out / "results.json", results)
        assert writer is not None
        writer.close()
    return results


def _truncate_log(path: Path, step: int) -> None:
    """Keeps the records of steps up to ``step`` (those after the checkpoint are replayed)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]  # fmt: skip
    write_text(path, "".join(line + "\n" for line in kept))


def _final_evaluation(
    config: TrainConfig, model: MultiTaskNet, proc: _Process, *, kept: str, step: int | None,
    input_size: list[int] | None, split: str | None = None, progress: bool = True,
    cluster_method: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    split = split or config.eval.report_split
    method = cluster_method or config.eval.cluster_method
    loader, frames = _eval_loader(config, split, proc)
    metrics = evaluate(model, loader, device=proc.device, input_size=input_size,
                       cluster_method=method, depth_scale=config.data.depth_scale,
                       amp_context=_autocast(config, proc.device),
                       progress=progress and proc.main, desc=f"evaluating {split}")  # fmt: skip
    image, _, _ = loader.dataset[0]
    return {
        "split": split,
        "checkpoint": kept,
        "step": step,
        "frames": frames,
        "resolution": list(image.shape[-2:]),
        "input_resolution": input_size or list(image.shape[-2:]),
        "cluster_method": method if {"semantic", "instance"} <= set(model.tasks) else None,
        "tasks": list(model.tasks),
        "metrics": metrics,
    }


def load_run(
    run_dir: str | os.PathLike[str], *, checkpoint: str = "auto", device: str | None = None
) -> tuple[MultiTaskNet, TrainConfig, dict[str, Any]]:
    """A run's network (in eval mode), its config and the checkpoint's state.

    Args:
        run_dir: a run directory of :func:`train`.
        checkpoint: ``"best"``, ``"last"``, or ``"auto"`` (best if there is one).
        device: default: the run's ``run.device``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; not a run directory")
    config = load_config(data=yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    if checkpoint == "auto":
        checkpoint = "best" if (run_dir / "checkpoints" / "best.pt").is_file() else "last"
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    state: dict[str, Any] = torch.load(path, map_location=device or config.run.device,
                                       weights_only=False)  # fmt: skip
    state["checkpoint"] = checkpoint
    model = build_model(config).to(device or config.run.device)
    model.load_state_dict(state["model"])
    return model.eval(), config, state


def evaluate_checkpoint(
    run_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    checkpoint: str = "auto",
    data_root: str | os.PathLike[str] | None = None,
    cluster_method: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluates a run's checkpoint on a split; writes nothing (see :func:`evaluate_run`).

    Args:
        run_dir: a run directory of :func:`train`.
        split: default: the config's report split.
        checkpoint: ``"best"``, ``"last"``, or ``"auto"`` (best if there is one).
        data_root: evaluate on another Cityscapes-layout root, e.g. full-resolution Cityscapes
            for a network trained on Tiny Cityscapes: its input is resized to the training size
            and its outputs upsampled to the ground truth's.
        cluster_method: instance clustering for AP (default: the config's).
    """
    model, config, state = load_run(run_dir, checkpoint=checkpoint)
    if data_root is not None:
        # Another root: nothing to generate, and its frames must not replace the run's cache.
        config.data.root, config.data.synthetic, config.data.cache_dir = str(data_root), False, None
    proc = _setup_process(config.run.device)
    results = _final_evaluation(config, model, proc, kept=state["checkpoint"], step=state["step"],
                                input_size=state.get("input_size"),
                                split=split or config.eval.report_split,
                                cluster_method=cluster_method, progress=progress)  # fmt: skip
    if data_root is not None:
        results["data_root"] = str(data_root)
    return results


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    checkpoint: str = "auto",
    data_root: str | os.PathLike[str] | None = None,
    cluster_method: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``umtl evaluate``: :func:`evaluate_checkpoint`, written into the run directory.

    The report split of the run's own data goes to ``results.json`` (keeping its ``training``
    record); anything else to ``results-<split>[-<root name>].json``.
    """
    run_dir = Path(run_dir)
    results = evaluate_checkpoint(run_dir, split=split, checkpoint=checkpoint,
                                  data_root=data_root, cluster_method=cluster_method,
                                  progress=progress)  # fmt: skip
    config = load_config(data=yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    if data_root is None and results["split"] == config.eval.report_split:
        name = "results.json"
    else:
        name = f"results-{results['split']}" + (f"-{Path(data_root).name}" if data_root else "")
        name += ".json"
    if int(os.environ.get("RANK", "0")) == 0:
        previous = run_dir / name
        if previous.is_file():
            results["training"] = read_json(previous).get("training")
        write_json(run_dir / name, results)
    return results
