"""One runner for every study.

A *run* is a named, typed config patch and a seed. A *study* (the scene experiments, the
two-task study) turns a run into its resolved config once, and says how that config trains. The
runner gives each run a directory named by the hash of its resolved config (less what only
says how it executes: threads, device, loader workers, and the seed, which names the directory
below), ``<out>/runs/<name>-<hash>/seed<k>``, so every command that asks for the same config
finds the same run: a finished run is read from disk and never retrained, an interrupted one
resumes, and the rest go to an executor (``experiments.executors``) that trains them here or
on a cluster.

A study directory keeps a run's promises: one invocation writes into it at a time (a
:class:`~uncertainty_mtl._io.DirectoryLock` on ``<out>/umtl.lock``, held from the
:class:`Runner`'s construction to its :meth:`~Runner.close`), and a study killed at any moment
and started again trains no finished run twice and writes the same tables.
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import yaml

from uncertainty_mtl._io import DirectoryLock, claim_directory, read_json, write_json, write_text
from uncertainty_mtl.errors import DirectoryLockedError, RunDirectoryError
from uncertainty_mtl.experiments.executors import Executor, Job, LocalExecutor

__all__ = [
    "SMOKE_NOTE",
    "Run",
    "Runner",
    "Study",
    "loop_job",
    "train_when_free",
    "training_seconds",
]

#: The first line of a smoke study's tables.
SMOKE_NOTE = (
    "> **Smoke preset: these numbers mean nothing.** A few steps on cut data, to check that the "
    "pipeline runs end to end; run the study's own preset for results."
)


@dataclass(frozen=True, eq=False)
class Run:
    """A row's training: ``patch`` (``{dotted config key: value}``) on the study's base config,
    for one seed. ``selection`` runs serve a choice (a grid search): they train on the study's
    selection split and are scored there, never on the reported one."""

    name: str
    patch: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    selection: bool = False

    @property
    def key(self) -> str:
        return json.dumps(
            [self.name, self.patch, self.seed, self.selection], sort_keys=True, default=str
        )

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.key == other.key

    def with_patch(self, name: str, **patch: Any) -> Run:
        """This run under another name, with more keys patched."""
        return Run(name, {**self.patch, **patch}, self.seed, self.selection)


class Study(Protocol):
    """What the runner needs of a study's domain code."""

    #: the file a finished run holds (its result)
    result_file: str

    @property
    def smoke(self) -> bool:
        """A few steps on cut data, to check that the pipeline runs: its tables say that their
        numbers mean nothing."""

    def resolve(self, run: Run, *, parallel: bool) -> Any:
        """The run's validated config (``parallel``: it trains beside other runs)."""

    def identity(self, config: Any) -> dict[str, Any]:
        """What the run is: the resolved config without what says how it executes."""

    def job(self, config: Any, run_dir: Path) -> Job:
        """The call that trains ``config`` into ``run_dir`` (resuming what it finds there)."""

    def settings(self) -> dict[str, Any]:
        """What the study was asked (its preset, data and options): its ``config.yaml``."""

    def prepare(self, *, progress: bool = True) -> None:
        """Work shared by every run (data generated once), before runs start side by side;
        ``progress``: bars over that work."""


S = TypeVar("S", bound=Study)


#: The file that marks a directory as a study's output (tables, figures, ``runs/``).
MARKER = "umtl_study.json"


#: The study locks this process holds: directory -> (lock, runners holding it). A process may
#: open several runners on one directory (a study that builds on another's runs); a POSIX lock
#: belongs to the process, so it is taken once and released when the last of them closes.
_STUDY_LOCKS: dict[Path, tuple[DirectoryLock, int]] = {}


def _hold_study_lock(out: Path) -> Path:
    key = out.resolve()
    lock, holders = _STUDY_LOCKS.get(key) or (DirectoryLock(out, "writes a study into"), 0)
    if holders == 0:
        lock.acquire()
    _STUDY_LOCKS[key] = (lock, holders + 1)
    return key


def _drop_study_lock(key: Path) -> None:
    lock, holders = _STUDY_LOCKS.pop(key)
    if holders > 1:
        _STUDY_LOCKS[key] = (lock, holders - 1)
    else:
        lock.release()


#: Seconds between looks at a run that another process trains.
_POLL_S = 1.0


def train_when_free(
    run_dir: Path, result_file: str, train: Callable[[bool], dict[str, Any]]
) -> dict[str, Any]:
    """A job's training of the run in ``run_dir`` that waits for another process training it.

    A cluster job (or a ``submitit-local`` one) outlives the study that submitted it: a study
    killed and started again can find one of its runs still training. The job waits for that
    process to let go of the run, then returns its result if it finished, else resumes what it
    left. ``train(resume)`` trains the run (raising :class:`DirectoryLockedError` while another
    process holds it).
    """
    while True:
        result = run_dir / result_file
        if result.is_file():
            return _read_result(result)
        try:
            return train((run_dir / "checkpoints" / "last.pt").is_file())
        except DirectoryLockedError:
            time.sleep(_POLL_S)


def loop_job(loop_type: Any, settings: Any, run_dir: Path) -> dict[str, Any]:
    """A study's job for a run of the one loop (``loop_type``, e.g. the two-task or the QM9
    run, with its ``settings``): its result, trained, resumed or waited for
    (:func:`train_when_free`)."""
    from uncertainty_mtl.engine.rundir import train_in_directory

    return train_when_free(
        run_dir,
        "results.json",
        lambda resume: train_in_directory(loop_type, settings, run_dir, resume=resume),
    )


def _read_result(path: Path) -> dict[str, Any]:
    try:
        result: dict[str, Any] = read_json(path)
    except (OSError, ValueError) as err:
        raise RunDirectoryError(
            f"{path}: unreadable ({err}); delete its run directory to train the run again"
        ) from err
    return result


def training_seconds(result: Mapping[str, Any]) -> float:
    """A run's training seconds from its ``results.json``: ``training.seconds`` (summed over its
    sessions), or from scene runs of before it was recorded ``training.seconds_this_session``;
    0 where a result has neither."""
    training = result.get("training")
    if not isinstance(training, dict):
        return 0.0
    seconds = training.get("seconds", training.get("seconds_this_session"))
    return float(seconds) if isinstance(seconds, int | float) else 0.0


@dataclass
class Runner(Generic[S]):
    """Finds and trains the runs of one study invocation.

    Constructing one claims ``out`` (absent, empty, or a study of ours) and locks it for this
    process until :meth:`close` (or the end of a ``with`` block, or of the process); another
    process's study in ``out`` meanwhile is refused.

    Args:
        study: the domain.
        out: the directory of the study's outputs and of ``runs/``.
        executor: where runs train (default: a local pool of one process).
        progress: show a progress bar over runs.

    Raises:
        RunDirectoryError: ``out`` is not a study of ours, or another process writes a study
            into it (:class:`DirectoryLockedError`).
    """

    study: S
    out: Path
    executor: Executor = field(default_factory=LocalExecutor)
    progress: bool = True
    _started: float = field(default_factory=time.perf_counter)
    _used: set[Run] = field(default_factory=set)
    _trained: set[Run] = field(default_factory=set)
    _training_seconds: dict[Run, float] = field(default_factory=dict)
    _configs: dict[Run, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = claim_directory(self.out, MARKER, "umtl study output", legacy=("runs",))
        key = _hold_study_lock(self.out)
        self._release = weakref.finalize(self, _drop_study_lock, key)

    def close(self) -> None:
        """Lets go of the study directory's lock (once; also when the runner is collected)."""
        self._release()

    def __enter__(self) -> Runner[S]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def config(self, run: Run) -> Any:
        """The run's resolved config (resolved once)."""
        if run not in self._configs:
            self._configs[run] = self.study.resolve(run, parallel=self.executor.parallel)
        return self._configs[run]

    def run_dir(self, run: Run) -> Path:
        settings = self.study.identity(self.config(run))
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        return self.out / "runs" / f"{run.name}-{digest}" / f"seed{run.seed}"

    def finished(self, run: Run) -> bool:
        return (self.run_dir(run) / self.study.result_file).is_file()

    def results(self, runs: Iterable[Run]) -> dict[Run, dict[str, Any]]:
        """The results of ``runs``: read from disk where finished, else trained by the executor
        (an interrupted run resumes from its last checkpoint)."""
        done: dict[Run, dict[str, Any]] = {}
        todo: list[Run] = []
        for run in dict.fromkeys(runs):
            self._used.add(run)
            if self.finished(run):
                done[run] = _read_result(self.run_dir(run) / self.study.result_file)
            else:
                todo.append(run)
        if todo:
            self.study.prepare(progress=self.progress)
            jobs = {}
            for run in todo:
                job = self.study.job(self.config(run), self.run_dir(run))
                jobs[job.name] = (run, job)
            for name, result in self.executor.execute(
                [job for _, job in jobs.values()],
                progress=self.progress,
                desc=f"{self.out.name} runs",
            ):
                run = jobs[name][0]
                done[run] = result
                self._trained.add(run)
        for run, result in done.items():
            self._training_seconds[run] = training_seconds(result)
        return done

    def write_outputs(self, name: str, summary: Mapping[str, Any], markdown: str) -> Path:
        """Writes a study's results, the one way every study does, into ``out``, each file
        atomically: ``<name>.json`` (``summary``), ``<name>.md`` (its table; a smoke study's
        starts with :data:`SMOKE_NOTE`) and ``config.yaml`` (the study's settings,
        :meth:`Study.settings`). Returns the path of ``<name>.png``, the study's figure."""
        write_json(self.out / f"{name}.json", summary)
        write_text(
            self.out / f"{name}.md", f"{SMOKE_NOTE}\n\n{markdown}" if self.study.smoke else markdown
        )
        settings = json.loads(json.dumps(self.study.settings(), default=str))
        write_text(self.out / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
        return self.out / f"{name}.png"

    def timing(self) -> dict[str, Any]:
        """This invocation's wall time, how many of the runs it used it trained (the others were
        found finished on disk), and the training seconds of every run it used, summed (what
        the results cost, whichever invocation trained them)."""
        return {
            "wall_time_s": time.perf_counter() - self._started,
            "runs_trained": len(self._trained),
            "runs_used": len(self._used),
            "training_time_s": sum(self._training_seconds.values()),
        }
