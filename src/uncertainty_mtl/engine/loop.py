"""The training loop of the scene network.

A run directory holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one record per logging step
and per validation), ``results.json`` (final evaluation), ``checkpoints/last.pt`` and
``checkpoints/best.pt``, and TensorBoard event files.

The best checkpoint is chosen on ``eval.select_split`` by
:data:`~uncertainty_mtl.engine.evaluate.CHECKPOINT_CRITERION`; the final evaluation is on
``eval.report_split``, which nothing during training looks at.

The host waits for the device only on logging, validation and checkpoint steps: the loss's
finiteness is accumulated on the device and read then (on the CPU, where reading costs
nothing, after every step), and a checkpoint is written only when the parameters are finite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader

from uncertainty_mtl._io import append_line, is_disk_error, write_json, write_text
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
from uncertainty_mtl.engine.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    truncate_log,
)
from uncertainty_mtl.engine.cost import Phases, peak_memory, reset_peak_memory
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
from uncertainty_mtl.engine.rundir import open_run_directory
from uncertainty_mtl.engine.sampling import EpochBatches, SeededFrames
from uncertainty_mtl.engine.step import check_aggregation, log_record, update
from uncertainty_mtl.errors import RunDirectoryError, TrainingError
from uncertainty_mtl.inference.postprocess import upsample_outputs
from uncertainty_mtl.tasks.registry import task_errors

__all__ = ["TrainingError", "train"]


@dataclass
class _Best:
    """The best validation so far: its criterion score, its step, and the per-task errors of
    the first validation that the criterion divides by."""

    score: float = math.inf
    step: int | None = None
    reference: dict[str, float] | None = None


#: What ``last.pt`` holds besides each stateful part's state dict
#: (:meth:`Trainer.stateful_parts`), all needed to resume.
_RESUME_EXTRAS = ("rng", "step", "best")


def compile_module(module: nn.Module) -> Callable[..., Any]:
    """``torch.compile`` with its default backend (inductor)."""
    return torch.compile(module)


def finite_check_every(device: torch.device, log_every: int) -> int:
    """Steps between reads of the device's non-finite flag: every step on the CPU (a read is
    free), on logging steps on an accelerator (a read waits for the device)."""
    return 1 if device.type == "cpu" else log_every


class Trainer:
    """One run: its parts, its state and the steps that move it.

    Args:
        config: the resolved configuration.
        out: the run directory.
        proc: this process.
        progress: show progress bars.
        phases: where the run's seconds by phase are summed (see :meth:`run`, :meth:`finish`).
    """

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        proc: Process,
        *,
        progress: bool,
        phases: Phases | None = None,
    ) -> None:
        self.config, self.out, self.proc, self.progress = config, out, proc, progress
        self.phases = phases if phases is not None else Phases()
        self.resolved = config_to_dict(config)
        self.last_path = out / "checkpoints" / "last.pt"
        self.best_path = out / "checkpoints" / "best.pt"
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
        self.step = 0
        self.best = _Best()
        # this session's last validation (step, metrics): the final evaluation's when it is the
        # kept checkpoint's on the report split and nothing else is measured there
        self._validated: tuple[int, dict[str, Any]] | None = None
        self.saved_step: int | None = None
        self.seconds_before = 0.0  # training seconds of earlier sessions (up to their checkpoint)
        self._session_start: float | None = None
        self.finite_check_every = finite_check_every(proc.device, config.run.log_every)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=proc.device)
        self._unchecked_from = 1
        self.writer: Any = None

    # -- state ---------------------------------------------------------------------------------

    def stateful_parts(self) -> dict[str, Any]:
        """The parts whose state dicts ``last.pt`` holds, by their key there (the one list of
        them: :meth:`save_last` writes and :meth:`resume` reads exactly these)."""
        return {
            "model": self.model,
            "weighting": self.weighting,
            "optimizer": self.optimiser,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }

    def resume(self) -> None:
        parts = self.stateful_parts()
        keys = (*parts, *_RESUME_EXTRAS)
        state = load_checkpoint(self.last_path, self.proc.device, keys=keys)
        for key, part in parts.items():
            part.load_state_dict(state[key])
        set_rng_state(state["rng"])
        self.step, self.best = state["step"], _Best(**state["best"])
        self.seconds_before = float(state.get("seconds", 0.0))  # absent before it was recorded
        self.saved_step = self.step
        self._unchecked_from = self.step + 1

    def open_run_directory(self) -> None:
        if not self.proc.main:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "config.yaml", yaml.safe_dump(self.resolved, sort_keys=False))
        truncate_log(self.out / "metrics.jsonl", self.step)
        # Events of steps after the checkpoint (a killed run's) are dropped by readers.
        self.writer = SummaryWriter(log_dir=str(self.out / "tensorboard"), purge_step=self.step)

    def log(self, record: dict[str, Any]) -> None:
        """Appends ``record`` to ``metrics.jsonl``, and its curves to TensorBoard (not the
        epoch, nor the counts of labelled pixels: numbers, not curves)."""
        if not self.proc.main:
            return
        append_line(self.out / "metrics.jsonl", json.dumps(record))
        try:
            for key, value in record.items():
                if key in ("step", "epoch") or key.endswith("_pixels"):
                    continue
                if isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, record["step"])
        except OSError as err:  # TensorBoard's writer thread reports a full disk here
            if is_disk_error(err):
                raise RunDirectoryError(
                    f"{self.out / 'tensorboard'}: cannot write ({err.strerror})"
                ) from err
            raise

    def _kept(self) -> str:
        if self.saved_step is None:
            return "none yet"
        return f"{self.last_path} (step {self.saved_step})"

    def _parameters_finite(self) -> bool:
        flags = [p.detach().isfinite().all() for p in self.joint.parameters()]
        return bool(torch.stack(flags).all())

    def check_finite(
        self, losses: dict[str, Tensor], total: Tensor, *, parameters: bool = True
    ) -> None:
        """Reads the device's non-finite flag and (``parameters``) checks the parameters;
        raises :class:`TrainingError` if a total since the last read was not finite or a
        parameter is not (the checkpoint on disk stays the last good one).

        The parameters are checked before anything is logged, validated or saved; between
        those steps a non-finite parameter shows as a non-finite total one step later."""
        if not bool(self._nonfinite):
            if parameters and not self._parameters_finite():
                raise TrainingError(
                    f"step {self.step}: the parameters are not finite after the update (the "
                    f"total loss was finite: {float(total.detach())}); training stopped, "
                    f"nothing saved, last good checkpoint: {self._kept()}"
                )
            self._unchecked_from = self.step + 1
            return
        if self._unchecked_from == self.step:
            where = f"step {self.step}"
        else:
            where = f"a step in {self._unchecked_from}..{self.step}"
        values = {t: float(v.detach()) for t, v in losses.items()}
        bad = [t for t, v in values.items() if not math.isfinite(v)]
        raise TrainingError(
            f"{where}: non-finite total loss ({float(total.detach())}); task losses at step "
            f"{self.step}: {values}, non-finite: {bad}; training stopped, last good checkpoint: "
            f"{self._kept()}"
        )

    def save_last(self) -> None:
        if not self._parameters_finite():
            raise TrainingError(
                f"step {self.step}: the parameters are not finite; nothing saved, last good "
                f"checkpoint: {self._kept()}"
            )
        self.saved_step = self.step
        if self.proc.main:
            save_checkpoint(
                self.last_path,
                {
                    **{key: part.state_dict() for key, part in self.stateful_parts().items()},
                    "step": self.step,
                    "seconds": self.seconds_before + self._session_seconds(),
                    "rng": rng_state(),
                    "best": dataclasses.asdict(self.best),
                    "input_size": self.input_size,
                    "config": self.resolved,
                },
            )

    def _session_seconds(self) -> float:
        start = self._session_start
        return 0.0 if start is None else time.perf_counter() - start

    def validate(self) -> None:
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
                f"({errors}); training stopped, last good checkpoint: {self._kept()}"
            )
        self._validated = (self.step, metrics)
        if self.best.reference is None:
            self.best.reference = errors
        score = checkpoint_score(errors, self.best.reference)
        scalars = {f"{split}/{k}": v for k, v in metrics.items() if not isinstance(v, dict)}
        self.log({"step": self.step, "split": split, "criterion": score, **scalars})
        self.log_panel(split)
        if score < self.best.score:
            self.best.score, self.best.step = score, self.step
            if self.proc.main:
                save_checkpoint(
                    self.best_path,
                    {
                        "model": self.model.state_dict(),
                        "weighting": self.weighting.state_dict(),
                        "step": self.step,
                        "score": score,
                        "metrics": metrics,
                        "input_size": self.input_size,
                    },
                )

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

    def train_step(
        self, images: Tensor, targets: dict[str, Tensor], *, measure: bool = False
    ) -> tuple[Tensor, dict[str, Tensor], float, float | None]:
        """One step; with ``measure`` (a step that is logged) also the norm of its shared
        update against ``equal``'s on the same batch, on one process without compile."""
        with autocast(self.config, self.proc.device):
            total, losses, features = self.step_module(images, targets)
        self._nonfinite |= ~torch.isfinite(total.detach())
        measure = measure and self.proc.world == 1 and not self.config.run.compile
        ratio = update(
            self.model,
            self.weighting,
            self.optimiser,
            self.scaler,
            total,
            losses,
            features,
            compare_to_equal=measure,
        )
        lr = float(self.optimiser.param_groups[0]["lr"])  # the rate this step used
        self.scheduler.step()
        self.step += 1
        return total, losses, lr, ratio

    def run(self, on_step: Callable[[int], None] | None = None) -> float:
        """Trains to ``optim.steps``; returns the seconds it took. Its phases: ``steps``
        (forward, backward, update), ``data_wait`` (for the loader's next batch), ``logging``
        (finiteness checks included), ``validation`` and ``checkpoints``."""
        from tqdm.auto import tqdm

        c, proc = self.config, self.proc
        steps = c.optim.steps
        self.joint.train()
        reset_peak_memory(proc.device)
        start = self._session_start = time.perf_counter()
        bar = tqdm(
            total=steps,
            initial=self.step,
            desc=f"training {self.out.name}",
            unit="step",
            disable=not (self.progress and proc.main),
        )
        phases = self.phases
        waiting = time.perf_counter()
        for images, targets in self.loader():
            phases.add("data_wait", time.perf_counter() - waiting)
            images = images.to(proc.device, non_blocking=True)
            if c.run.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = {k: v.to(proc.device, non_blocking=True) for k, v in targets.items()}
            epoch = self.step // self.steps_per_epoch
            if self.step % self.steps_per_epoch == 0:
                self.weighting.on_epoch(epoch)  # epoch statistics (e.g. DWA's loss ratios)
            logging = (self.step + 1) % c.run.log_every == 0 or self.step + 1 == steps
            with phases("steps"):
                total, losses, lr, ratio = self.train_step(images, targets, measure=logging)
            bar.update()
            checkpointing = self.step % c.run.checkpoint_every == 0 or self.step == steps
            validating = self.select_loader is not None and (
                self.step % c.eval.every == 0 or self.step == steps
            )
            syncing = logging or checkpointing or validating
            with phases("logging"):
                if syncing or self.step % self.finite_check_every == 0:
                    self.check_finite(losses, total, parameters=syncing)
                if logging:
                    record = log_record(self.step, epoch, losses, total, self.weighting, lr, ratio)
                    self.log(record)
                    shown = {t: f"{record[f'loss/{t}']:.3g}" for t in self.tasks}
                    variances = self.weighting.variances().items()
                    shown.update({f"σ²{t[:3]}": f"{v:.3g}" for t, v in variances})
                    bar.set_postfix(shown)
            if validating:
                with phases("validation"):
                    self.validate()
            if checkpointing:
                with phases("checkpoints"):
                    self.save_last()
            if on_step is not None:
                on_step(self.step)
            waiting = time.perf_counter()
        bar.close()
        return time.perf_counter() - start

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
            "steps": self.config.optim.steps,
            "seconds_this_session": train_seconds,
            # every session's, each up to its last checkpoint (work a killed session redid later
            # is counted once)
            "seconds": self.seconds_before + train_seconds,
            "selection_split": self.config.eval.select_split,
            "selection_criterion": CHECKPOINT_CRITERION,
            "best_step": self.best.step,
            "weighting_at_kept_checkpoint": self.weighting.log_dict(),
            "phase_seconds": dict(self.phases.seconds),
            **peak_memory(proc.device),
        }
        if distributed:
            results["distributed"] = distributed
        if proc.main:
            write_json(self.out / "results.json", results)
            # the reported split's numbers, beside the curves, at the kept checkpoint's step
            split, step = results["split"], results["step"] or self.step
            for key, value in results["metrics"].items():
                if isinstance(value, int | float) and not key.endswith("_pixels"):
                    self.writer.add_scalar(f"{split}/{key}", value, step)
            self.writer.close()
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
    trainer: Trainer | None = None
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
            with phases("setup"):  # data sets and caches opened, model built, state resumed
                trainer = Trainer(config, Path(out), proc, progress=progress, phases=phases)
                if resume:
                    trainer.resume()
                trainer.open_run_directory()
            seconds = trainer.run(on_step)
            return trainer.finish(seconds)
    finally:
        if trainer is not None and trainer.writer is not None:
            # Closed twice after finish() is a no-op; a full disk must not hide the error.
            with contextlib.suppress(OSError):
                trainer.writer.close()
        run_dir.close()
