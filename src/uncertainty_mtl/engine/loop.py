"""The one training loop: every run of every study (the scene network, the two-task study, QM9)
trains through :class:`Loop`.

A study supplies, in a subclass, what is its own: the model, the weighting (or aggregator), the
optimiser, the batches from any step on (:meth:`Loop.batches`), the forward pass that gives
the task losses (:meth:`Loop.forward`), the validation
(:meth:`Loop.evaluate_on_selection`) and the final evaluation (:meth:`Loop.finish`). The loop
gives the rest, the same for every study:

- the weighting's or aggregator's update (:func:`~uncertainty_mtl.engine.step.update`);
- ``checkpoints/last.pt`` every ``checkpoint_every`` steps and at the end, and an exact resume
  from it (model, weighting, optimiser, schedule, scaler, step, random state, the best
  validation, and whatever the study keeps, :meth:`Loop.study_state`);
- the non-finite checks: a non-finite total loss or parameter stops training before anything
  is saved, and the checkpoint on disk stays the last good one;
- ``metrics.jsonl`` (:func:`~uncertainty_mtl.engine.step.log_record` every ``log_every`` steps
  and at the last), TensorBoard, the progress bar and the seconds by phase.

The host waits for the device only on logging, validation and checkpoint steps: the loss's
finiteness is accumulated on the device and read then (on the CPU, where reading costs
nothing, after every step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from uncertainty_mtl._io import append_line, is_disk_error, write_json, write_text
from uncertainty_mtl.engine.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    truncate_log,
)
from uncertainty_mtl.engine.cost import Phases, peak_memory, reset_peak_memory
from uncertainty_mtl.engine.distributed import Process
from uncertainty_mtl.engine.step import log_record, update
from uncertainty_mtl.errors import RunDirectoryError, TrainingError
from uncertainty_mtl.weighting import Weighting

__all__ = [
    "Best",
    "Loop",
    "TrainingError",
    "checkpoint_epochs",
    "finite_check_every",
]


@dataclass
class Best:
    """The best validation so far: its criterion score, its step, and the per-task errors of
    the first validation that a relative criterion divides by."""

    score: float = math.inf
    step: int | None = None
    reference: dict[str, float] | None = None


#: What ``last.pt`` holds besides each stateful part's state dict (:meth:`Loop.stateful_parts`),
#: all needed to resume.
_RESUME_EXTRAS = ("rng", "step", "best")


def finite_check_every(device: torch.device, log_every: int) -> int:
    """Steps between reads of the device's non-finite flag: every step on the CPU (a read is
    free), on logging steps on an accelerator (a read waits for the device)."""
    return 1 if device.type == "cpu" else log_every


def checkpoint_epochs(epochs: int, checkpoints: int = 10) -> int:
    """Epochs between the checkpoints of a run of ``epochs`` epochs: about ``checkpoints`` of
    them, each at the end of an epoch (a kill loses at most a tenth of the run; a run of many
    short epochs does not spend its time writing them)."""
    return max(1, math.ceil(epochs / checkpoints))


class Loop:
    """One run's training. A study's subclass sets, in its ``__init__`` before calling this
    one's, ``model`` (with ``shared_parameters`` and ``last_shared_layer``), ``weighting``,
    ``optimiser``, ``tasks`` and ``steps_per_epoch``, and may set ``scheduler`` and ``scaler``.

    Args:
        out: the run directory.
        proc: this process.
        resolved: the run's resolved config (``config.yaml``, and stored in ``last.pt``).
        steps: the run's optimiser steps.
        log_every: steps between ``metrics.jsonl`` records (and the last step).
        checkpoint_every: steps between checkpoints (and the last step).
        eval_every: steps between validations (and the last step); ``None``: none.
        progress: show a progress bar.
        phases: where the run's seconds by phase are summed.
    """

    model: nn.Module
    weighting: Weighting
    optimiser: torch.optim.Optimizer
    tasks: Sequence[str]
    steps_per_epoch: int
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler
    #: Keys of the run's settings that say how it executes, not what it is (a resume may
    #: change them): :func:`~uncertainty_mtl.engine.rundir.train_in_directory` compares the rest.
    volatile: tuple[str, ...] = ()

    def __init__(
        self,
        out: Path,
        proc: Process,
        resolved: dict[str, Any],
        *,
        steps: int,
        log_every: int,
        checkpoint_every: int,
        eval_every: int | None,
        progress: bool,
        phases: Phases | None = None,
    ) -> None:
        self.out, self.proc, self.resolved, self.progress = out, proc, resolved, progress
        self.steps, self.log_every = steps, log_every
        self.checkpoint_every, self.eval_every = checkpoint_every, eval_every
        self.phases = phases if phases is not None else Phases()
        if not hasattr(self, "scaler"):  # the update's hooks expect one
            self.scaler = torch.amp.GradScaler(proc.device.type, enabled=False)
        self.last_path = out / "checkpoints" / "last.pt"
        self.best_path = out / "checkpoints" / "best.pt"
        self.step = 0
        self.best = Best()
        self.saved_step: int | None = None
        self.seconds_before = 0.0  # training seconds of earlier sessions (up to their checkpoint)
        self._session_start: float | None = None
        self._validation_before = 0.0  # the phases' validation seconds when this session began
        self.finite_check_every = finite_check_every(proc.device, log_every)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=proc.device)
        self._unchecked_from = 1
        self.writer: Any = None

    # -- what a study supplies -----------------------------------------------------------------

    def batches(self) -> Iterable[Any]:
        """The batches of steps ``self.step + 1`` to ``self.steps``, in order (after a resume,
        the same ones an uninterrupted run would have drawn)."""
        raise NotImplementedError

    def forward(self, batch: Any) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """The batch's weighted total, its task losses, and the shared features when the
        weighting aggregates task gradients (``weighting.needs_features``), else ``None``."""
        raise NotImplementedError

    def evaluate_on_selection(self) -> None:
        """The validation at ``self.step`` (every ``eval_every`` steps and at the last)."""

    def finish(self, train_seconds: float) -> dict[str, Any]:
        """Evaluates the kept model; writes and returns the run's result
        (:meth:`write_results`)."""
        raise NotImplementedError

    def study_state(self) -> dict[str, Any]:
        """What the study keeps across steps beyond the model (e.g. its curves), as tensors
        and plain values: stored in ``last.pt`` and handed back on resume."""
        return {}

    def load_study_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`study_state`."""

    @property
    def can_measure(self) -> bool:
        """Whether a logged step may measure its update against ``equal``'s (one more backward
        pass; not under DDP or ``torch.compile``)."""
        return self.proc.world == 1

    def trained_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the finiteness check reads."""
        yield from self.model.parameters()
        yield from self.weighting.parameters()

    def checkpoint_extras(self) -> dict[str, Any]:
        """What a study stores in its checkpoints beside the state (e.g. the input size)."""
        return {}

    # -- state ---------------------------------------------------------------------------------

    def stateful_parts(self) -> dict[str, Any]:
        """The parts whose state dicts ``last.pt`` holds, by their key there (the one list of
        them: :meth:`save_last` writes and :meth:`resume` reads exactly these)."""
        parts: dict[str, Any] = {
            "model": self.model,
            "weighting": self.weighting,
            "optimizer": self.optimiser,
            "scaler": self.scaler,
        }
        if self.scheduler is not None:
            parts["scheduler"] = self.scheduler
        return parts

    def resume(self) -> None:
        parts = self.stateful_parts()
        keys = (*parts, *_RESUME_EXTRAS)
        state = load_checkpoint(self.last_path, self.proc.device, keys=keys)
        for key, part in parts.items():
            part.load_state_dict(state[key])
        set_rng_state(state["rng"])
        self.step, self.best = state["step"], Best(**state["best"])
        self.seconds_before = float(state.get("seconds", 0.0))  # absent before it was recorded
        self.load_study_state(state.get("study", {}))
        self.saved_step = self.step
        self._unchecked_from = self.step + 1

    def open_run_directory(self) -> None:
        """Writes ``config.yaml``, drops the records of steps after the checkpoint from
        ``metrics.jsonl`` (they are trained again) and opens TensorBoard's writer."""
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

    def kept(self) -> str:
        """The last good checkpoint, for messages."""
        if self.saved_step is None:
            return "none yet"
        return f"{self.last_path} (step {self.saved_step})"

    def _parameters_finite(self) -> bool:
        flags = [p.detach().isfinite().all() for p in self.trained_parameters()]
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
                    f"nothing saved, last good checkpoint: {self.kept()}"
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
            f"{self.kept()}"
        )

    def save_last(self) -> None:
        if not self._parameters_finite():
            raise TrainingError(
                f"step {self.step}: the parameters are not finite; nothing saved, last good "
                f"checkpoint: {self.kept()}"
            )
        self.saved_step = self.step
        if self.proc.main:
            save_checkpoint(
                self.last_path,
                {
                    **{key: part.state_dict() for key, part in self.stateful_parts().items()},
                    "step": self.step,
                    "seconds": self.seconds_before + self.session_seconds(),
                    "rng": rng_state(),
                    "best": dataclasses.asdict(self.best),
                    "study": self.study_state(),
                    **self.checkpoint_extras(),
                    "config": self.resolved,
                },
            )

    def save_best(self, score: float, **extras: Any) -> None:
        """Keeps the model as it is in ``best.pt`` when ``score`` (lower is better) beats the
        best so far; ``extras`` (e.g. its metrics) are stored beside it."""
        if score >= self.best.score:
            return
        self.best.score, self.best.step = score, self.step
        if self.proc.main:
            save_checkpoint(
                self.best_path,
                {
                    "model": self.model.state_dict(),
                    "weighting": self.weighting.state_dict(),
                    "step": self.step,
                    "score": score,
                    **extras,
                    **self.checkpoint_extras(),
                },
            )

    def load_best(self) -> None:
        """Puts the model and the weighting of ``best.pt`` in place."""
        state = load_checkpoint(self.best_path, self.proc.device)
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])

    def session_seconds(self) -> float:
        """This session's training seconds so far (its validations not counted)."""
        start = self._session_start
        if start is None:
            return 0.0
        validation = self.phases.seconds.get("validation", 0.0) - self._validation_before
        return time.perf_counter() - start - validation

    # -- the loop ------------------------------------------------------------------------------

    def train_step(
        self, batch: Any, *, measure: bool = False
    ) -> tuple[Tensor, dict[str, Tensor], float, float | None]:
        """One step; with ``measure`` (a step that is logged) also the norm of its shared
        update against ``equal``'s on the same batch (:attr:`can_measure`)."""
        total, losses, features = self.forward(batch)
        self._nonfinite |= ~torch.isfinite(total.detach())
        ratio = update(
            self.model,  # type: ignore[arg-type]
            self.weighting,
            self.optimiser,
            self.scaler,
            total,
            losses,
            features,
            compare_to_equal=measure and self.can_measure,
        )
        lr = float(self.optimiser.param_groups[0]["lr"])  # the rate this step used
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return total, losses, lr, ratio

    def bar_label(self) -> str:
        return f"training {self.out.name}"

    def run(self, on_step: Callable[[int], None] | None = None) -> float:
        """Trains to ``steps``; returns this session's training seconds (its validations not
        counted). Its phases: ``steps`` (forward, backward, update), ``data_wait`` (for the next
        batch), ``logging`` (finiteness checks included), ``validation`` and ``checkpoints``."""
        from tqdm.auto import tqdm

        steps, proc, phases = self.steps, self.proc, self.phases
        self.model.train()
        self.weighting.train()
        reset_peak_memory(proc.device)
        self._validation_before = phases.seconds.get("validation", 0.0)
        self._session_start = time.perf_counter()
        bar = tqdm(
            total=steps,
            initial=self.step,
            desc=self.bar_label(),
            unit="step",
            disable=not (self.progress and proc.main),
        )
        waiting = time.perf_counter()
        for batch in self.batches():
            phases.add("data_wait", time.perf_counter() - waiting)
            epoch = self.step // self.steps_per_epoch
            if self.step % self.steps_per_epoch == 0:
                self.weighting.on_epoch(epoch)  # epoch statistics (e.g. DWA's loss ratios)
            logging = (self.step + 1) % self.log_every == 0 or self.step + 1 == steps
            with phases("steps"):
                total, losses, lr, ratio = self.train_step(batch, measure=logging)
            bar.update()
            checkpointing = self.step % self.checkpoint_every == 0 or self.step == steps
            validating = self.eval_every is not None and (
                self.step % self.eval_every == 0 or self.step == steps
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
                    self.evaluate_on_selection()
            if checkpointing:
                with phases("checkpoints"):
                    self.save_last()
            if on_step is not None:
                on_step(self.step)
            waiting = time.perf_counter()
        bar.close()
        return self.session_seconds()

    def training_record(self, train_seconds: float) -> dict[str, Any]:
        """``results.json``'s ``training``: the steps, the training seconds of this session and
        of every session (each up to its last checkpoint: work a killed session redid later is
        counted once), this session's seconds by phase and the peak memory."""
        return {
            "steps": self.steps,
            "seconds_this_session": train_seconds,
            "seconds": self.seconds_before + train_seconds,
            "seconds_per_step": (self.seconds_before + train_seconds) / max(self.steps, 1),
            "phase_seconds": dict(self.phases.seconds),
            **peak_memory(self.proc.device),
        }

    def write_results(self, results: dict[str, Any]) -> None:
        """Writes ``results.json`` (the main process), and the reported split's metrics beside
        the curves in TensorBoard at the kept model's step."""
        if not self.proc.main:
            return
        write_json(self.out / "results.json", results)
        split, step = results["split"], results.get("step") or self.step
        for key, value in results["metrics"].items():
            if isinstance(value, int | float) and not key.endswith("_pixels"):
                self.writer.add_scalar(f"{split}/{key}", value, step)
        self.writer.close()

    def close(self) -> None:
        """Closes TensorBoard's writer (again after :meth:`write_results` is a no-op); a full
        disk here must not hide the error that ended the run."""
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.close()
