"""The scene network's run on the one loop (:class:`~uncertainty_mtl.engine.loop.Loop`): its
frames and loader, the joint network (DDP, ``torch.compile``, mixed precision), the validation
that keeps ``checkpoints/best.pt``, and the final evaluation.

A run directory holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one record per logging step
and per validation), ``results.json`` (final evaluation), ``checkpoints/last.pt`` and
``checkpoints/best.pt``, and TensorBoard event files.

The best checkpoint is chosen on ``eval.select_split`` by
:data:`~uncertainty_mtl.engine.evaluate.CHECKPOINT_CRITERION`; the final evaluation is on
``eval.report_split``, which nothing during training looks at.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from uncertainty_mtl._procs import loader_worker_options
from uncertainty_mtl.config import (
    ConfigError,
    TrainConfig,
    config_to_dict,
    with_absolute_paths,
)
from uncertainty_mtl.data.cityscapes import IMAGENET_MEAN, IMAGENET_STD
from uncertainty_mtl.data.prepare import check_scene_root, ensure_scene_data, scene_frames
from uncertainty_mtl.engine.builders import (
    NetWithLoss,
    autocast,
    build_model,
    build_optimiser,
    build_scheduler,
    build_weighting,
    deterministic,
    grad_scaler,
)
from uncertainty_mtl.engine.checkpoint import load_checkpoint
from uncertainty_mtl.engine.cost import Phases
from uncertainty_mtl.engine.distributed import (
    Process,
    all_gather_objects,
    broadcast_object,
    check_device,
    checksum,
    setup_process,
    sync_buffers,
)
from uncertainty_mtl.engine.evaluate import (
    CHECKPOINT_CRITERION,
    checked_split,
    checkpoint_score,
    eval_loader,
    evaluate,
    final_evaluation,
    input_size_of,
)
from uncertainty_mtl.engine.loop import Loop
from uncertainty_mtl.engine.rundir import open_run_directory, train_loop
from uncertainty_mtl.engine.sampling import EpochBatches, SeededFrames
from uncertainty_mtl.engine.step import check_aggregation
from uncertainty_mtl.errors import TrainingError
from uncertainty_mtl.inference.postprocess import upsample_outputs
from uncertainty_mtl.models.multitask import MultiTaskNet
from uncertainty_mtl.tasks.registry import task_errors

__all__ = ["SceneLoop", "TrainingError", "train"]


def compile_module(module: nn.Module) -> Callable[..., Any]:
    """``torch.compile`` with its default backend (inductor)."""
    return torch.compile(module)


class SceneLoop(Loop):
    """One run of the scene network.

    Args:
        config: the resolved configuration.
        out: the run directory.
        proc: this process.
        progress: show progress bars.
        phases: where the run's seconds by phase are summed (see :meth:`run`, :meth:`finish`).
    """

    model: MultiTaskNet

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        proc: Process,
        *,
        progress: bool,
        phases: Phases | None = None,
    ) -> None:
        self.config = config
        self.tasks = config.trained_tasks
        per_rank, remainder = divmod(config.optim.batch_size, proc.world)
        if remainder or per_rank < 1:
            raise ConfigError(
                f"optim.batch_size {config.optim.batch_size} must be a multiple of the number of "
                f"processes ({proc.world})"
            )
        self.per_rank_batch = per_rank
        shown = progress and proc.main
        self.frames = scene_frames(
            config.data, self.tasks, config.data.train_split, train=True, progress=shown
        )
        self.steps_per_epoch = len(self.frames) // config.optim.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"the {config.data.train_split} split has {len(self.frames)} frames, fewer than "
                f"one batch of {config.optim.batch_size}"
            )
        self.input_size = input_size_of(config, self.frames)
        # Every split the run touches is checked now, not after the last step.
        select = config.eval.select_split
        self.select_loader = None
        if select:
            frames = checked_split(config, select, "eval.select_split", progress=shown)
            self.select_loader = eval_loader(config, select, proc, frames)[0]
        self.report_frames = checked_split(
            config, config.eval.report_split, "eval.report_split", progress=shown
        )

        torch.manual_seed(config.run.seed)
        model = build_model(config).to(proc.device)
        if config.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.weighting = build_weighting(config).to(proc.device)
        if self.weighting.needs_features:
            check_aggregation(config, proc)
        if config.model.sync_bn and proc.world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        self.model = model
        joint: nn.Module = NetWithLoss(model, self.weighting, depth_scale=config.data.depth_scale)
        if proc.world > 1:
            joint = nn.parallel.DistributedDataParallel(
                joint, device_ids=[proc.device.index] if proc.device.type == "cuda" else None
            )
        # Compiled, the module is called; ``joint`` keeps the parameters and the state dicts.
        self.joint = joint
        self.step_module: Callable[..., tuple[Tensor, dict[str, Tensor], Tensor | None]] = (
            compile_module(joint) if config.run.compile else joint
        )
        self.optimiser = build_optimiser(config, model, self.weighting)
        self.scheduler = build_scheduler(config, self.optimiser)
        self.scaler = grad_scaler(config, proc.device)
        # this session's last validation (step, metrics): the final evaluation's when it is the
        # kept checkpoint's on the report split and nothing else is measured there
        self._validated: tuple[int, dict[str, Any]] | None = None
        super().__init__(
            out,
            proc,
            config_to_dict(config),
            steps=config.optim.steps,
            log_every=config.run.log_every,
            checkpoint_every=config.run.checkpoint_every,
            eval_every=config.eval.every if select else None,
            progress=progress,
            phases=phases,
        )

    # -- what the loop asks of the study ------------------------------------------------------

    @property
    def can_measure(self) -> bool:
        return self.proc.world == 1 and not self.config.run.compile

    def trained_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.joint.parameters()

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"input_size": self.input_size}

    def evaluate_on_selection(self) -> None:
        split = self.config.eval.select_split
        assert self.select_loader is not None and split is not None
        sync_buffers(self.model, self.proc)
        metrics = evaluate(
            self.model,
            self.select_loader,
            device=self.proc.device,
            input_size=self.input_size,
            depth_scale=self.config.data.depth_scale,
            amp_context=autocast(self.config, self.proc.device),
            channels_last=self.config.run.channels_last,
        )
        errors = task_errors(metrics, self.tasks)
        if not all(math.isfinite(e) for e in errors.values()):
            raise TrainingError(
                f"step {self.step}: a task error on eval.select_split {split!r} is not finite "
                f"({errors}); training stopped, last good checkpoint: {self.kept()}"
            )
        self._validated = (self.step, metrics)
        if self.best.reference is None:
            self.best.reference = errors
        score = checkpoint_score(errors, self.best.reference)
        scalars = {f"{split}/{k}": v for k, v in metrics.items() if not isinstance(v, dict)}
        self.log({"step": self.step, "split": split, "criterion": score, **scalars})
        self.log_panel(split)
        self.save_best(score, metrics=metrics)

    @torch.no_grad()
    def log_panel(self, split: str) -> None:
        """TensorBoard's image of the first frame of ``split``: input, then prediction beside
        ground truth for each task (``<split>/prediction``)."""
        if not self.proc.main or self.select_loader is None:
            return
        from uncertainty_mtl.reporting.visualise import prediction_strip

        image, targets, _ = self.select_loader.dataset[0]
        x = image[None].to(self.proc.device)
        size = tuple(image.shape[-2:])
        if self.input_size is not None and list(self.input_size) != list(size):
            x = F.interpolate(x, size=tuple(self.input_size), mode="bilinear", antialias=True)
        was_training = self.model.training
        self.model.eval()
        with autocast(self.config, self.proc.device):
            outputs = {k: v.float() for k, v in self.model(x).items()}
        self.model.train(was_training)
        if "depth" in outputs:
            outputs["depth"] = outputs["depth"] / self.config.data.depth_scale
        full = upsample_outputs(outputs, size)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        rgb = ((image * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        strip = prediction_strip(
            rgb,
            {k: v[0].cpu().numpy() for k, v in full.items()},
            {k: v.numpy() for k, v in targets.items()},
        )
        self.writer.add_image(f"{split}/prediction", strip, self.step, dataformats="HWC")

    # -- the loop ------------------------------------------------------------------------------

    def loader(self) -> DataLoader[Any]:
        """One loader for the rest of the run; its workers live as long as it does. Its own
        generator keeps the global RNG (dropout) untouched by the loader."""
        c = self.config
        sampler = EpochBatches(
            len(self.frames),
            self.per_rank_batch,
            self.proc.world,
            self.proc.rank,
            c.run.seed,
            c.optim.steps,
            self.step,
        )
        return DataLoader(
            SeededFrames(self.frames, c.run.seed),
            batch_sampler=sampler,
            num_workers=c.data.workers,
            persistent_workers=c.data.workers > 0,
            pin_memory=self.proc.device.type == "cuda",
            generator=torch.Generator().manual_seed(c.run.seed),
            **loader_worker_options(c.data.workers),
        )

    def batches(self) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        yield from self.loader()

    def forward(
        self, batch: tuple[Tensor, dict[str, Tensor]]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        images, targets = batch
        device = self.proc.device
        images = images.to(device, non_blocking=True)
        if self.config.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
        with autocast(self.config, device):
            return self.step_module(images, targets)

    def _kept_validation(self, kept: str) -> dict[str, Any] | None:
        """The metrics of this session's last validation (always at the last step) when it
        measured the kept checkpoint on the report split with everything the final evaluation
        measures (no instance clustering), else ``None``."""
        c = self.config
        clusters = c.eval.cluster_method is not None and {"semantic", "instance"} <= set(self.tasks)
        if (
            kept != "best"
            or self._validated is None
            or self._validated[0] != self.best.step
            or c.eval.select_split != c.eval.report_split
            or clusters
        ):
            return None
        return self._validated[1]

    def finish(self, train_seconds: float) -> dict[str, Any]:
        """Evaluates the kept checkpoint on the report split (phase ``final_evaluation``, of
        which ``clustering`` and ``instance_ap``); writes ``results.json``, whose
        ``training.phase_seconds`` are this session's seconds by phase."""
        proc = self.proc
        distributed = None
        if proc.world > 1:
            sync_buffers(self.model, proc)
            sums = all_gather_objects([checksum(self.model), self.weighting.log_variances()])
            distributed = {
                "world_size": proc.world,
                "per_rank": sums,
                "identical_on_all_ranks": all(s == sums[0] for s in sums),
            }
        kept = "best" if self.best.step is not None else "last"
        # a selection run's single validation measured the kept checkpoint (the model as it
        # is) on this very split: not measured twice
        measured = self._kept_validation(kept)
        with self.phases("final_evaluation"):
            if kept == "best" and measured is None:
                state = load_checkpoint(self.best_path, proc.device) if proc.main else None
                state = broadcast_object(state)
                self.model.load_state_dict(state["model"])
                self.weighting.load_state_dict(state["weighting"])
            results = final_evaluation(
                self.config,
                self.model,
                proc,
                kept=kept,
                input_size=self.input_size,
                step=self.best.step if kept == "best" else self.step,
                progress=self.progress,
                frames=self.report_frames,
                phases=self.phases,
                metrics=measured,
            )
        results["training"] = {
            **self.training_record(train_seconds),
            "selection_split": self.config.eval.select_split,
            "selection_criterion": CHECKPOINT_CRITERION,
            "best_step": self.best.step,
            "weighting_at_kept_checkpoint": self.weighting.log_dict(),
        }
        if distributed:
            results["distributed"] = distributed
        self.write_results(results)
        return results


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
        RunDirectoryError: ``out`` is not ours, another process trains into it, it already
            holds a run (without ``resume``) or no checkpoint (with it).
        ConfigError: with ``resume``, ``out`` holds a run of another configuration.
        DataError: a split the run touches is missing, unreadable, or has no labelled pixels
            for a task (found before the first step).
        TrainingError: the total loss or the parameters became non-finite (the message names
            the step and the tasks; the last good checkpoint stays).

    Returns:
        The content of ``results.json``.
    """
    check_device(config.run.device)
    config = with_absolute_paths(config)  # config.yaml names the data wherever it is read
    check_scene_root(config.data)  # a root that gives no data: refused before the run directory
    main = int(os.environ.get("RANK", "0")) == 0
    run_dir = open_run_directory(out, config_to_dict(config), resume=resume, main=main)
    phases = Phases()
    try:
        proc = setup_process(config.run.device)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        if proc.main:
            with phases("data"):  # the synthetic city generated when missing
                ensure_scene_data(config.data, progress=progress)
        if proc.world > 1:
            dist.barrier()
        with deterministic(config.run.deterministic):
            return train_loop(
                lambda: SceneLoop(config, Path(out), proc, progress=progress, phases=phases),
                resume=resume,
                phases=phases,
                on_step=on_step,
            )
    finally:
        run_dir.close()
