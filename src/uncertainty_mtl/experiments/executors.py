"""Where a study's runs train.

- :class:`LocalExecutor` (``--launcher local``, the default): a pool of processes on this
  machine, and waits for them.
- :class:`SubmititExecutor` through submitit: ``--launcher slurm`` submits one SLURM job per
  run (a job array for a sweep) and returns without waiting, so a study stops with
  :class:`Submitted`; rerun it when the jobs are done and it writes its tables from the
  finished runs. ``--launcher submitit-local`` runs the same path with submitit's local
  executor and waits. A job that asks for several GPUs runs one task per GPU, each a rank of
  one ``torch.distributed`` job (the environment ``torchrun`` would set).
"""

from __future__ import annotations

import os
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from uncertainty_mtl._io import read_json, write_json
from uncertainty_mtl._procs import die_with_parent
from uncertainty_mtl.errors import ConfigError, TrainingError

__all__ = [
    "LAUNCHERS",
    "Executor",
    "Job",
    "LocalExecutor",
    "SlurmOptions",
    "SubmititExecutor",
    "Submitted",
    "make_executor",
]

LAUNCHERS = ("local", "slurm", "submitit-local")


@dataclass(frozen=True)
class Job:
    """One run's training: ``fn(*args)`` returns the run's result (a JSON-like dict). ``fn``
    must be importable by name (it is pickled to another process)."""

    name: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]


#: SLURM states of a job that will still run (or is running).
_ALIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED")


class Submitted(Exception):
    """Runs were submitted to a cluster (or are still queued there); the study's outputs wait
    for them. ``failed``: the runs whose earlier job ended without a result (``name (job id,
    state)``), submitted again."""

    def __init__(
        self,
        job_ids: Sequence[str],
        folder: Path,
        *,
        waiting: Sequence[str] = (),
        failed: Sequence[str] = (),
    ) -> None:
        self.job_ids = list(job_ids)
        self.waiting = list(waiting)
        self.failed = list(failed)
        self.folder = folder
        parts = []
        if self.failed:
            parts.append(
                f"{len(self.failed)} run(s) whose job ended without a result: "
                f"{', '.join(self.failed)}; only these and the runs never submitted go again"
            )
        if self.job_ids:
            parts.append(
                f"submitted {len(self.job_ids)} run(s) as job(s) {', '.join(self.job_ids)}"
            )
        if self.waiting:
            parts.append(
                f"{len(self.waiting)} run(s) still queued or running as job(s) "
                f"{', '.join(self.waiting)}, not submitted again"
            )
        super().__init__(
            "; ".join(parts) + f" (logs in {folder}); when they have finished, run the same "
            "command without --launcher slurm to write the tables (or with it, to submit the "
            "runs that depend on them)"
        )


def _call(threads: int, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


class Executor(ABC):
    """Trains jobs somewhere."""

    #: runs train side by side on this machine (each then gets one thread)
    parallel: bool = False
    #: how many runs train at once (0: as many as are given, e.g. a cluster's jobs)
    slots: int = 0

    @abstractmethod
    def execute(
        self, jobs: Sequence[Job], *, progress: bool = True, desc: str = "runs"
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yields ``(job name, result)`` as jobs finish; raises :class:`Submitted` instead when
        the jobs run on after this process."""

    def close(self) -> None:  # noqa: B027 - most executors hold nothing between batches
        """Lets go of what the executor keeps between batches (a local pool's workers)."""


@dataclass
class LocalExecutor(Executor):
    """Runs on this machine: one after another in this process (``workers=1``), or side by
    side in a pool of ``workers`` spawned processes (CUDA and threads start clean), each run
    with one thread.

    The pool starts with the first batch of runs and serves every later one until
    :meth:`close` (or the end of the process): a worker pays its process start and its
    imports (torch, the study's modules) once per command, not once per batch.
    """

    workers: int = 1
    _pool: ProcessPoolExecutor | None = field(default=None, init=False, repr=False)
    _stop: weakref.finalize | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.parallel = self.workers > 1
        self.slots = self.workers

    def close(self) -> None:
        """Stops the pool's workers (a later batch starts a new pool)."""
        if self._stop is not None:
            self._stop()  # shuts the pool down (once), also at the end of the process
        self._pool = self._stop = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(
        self, jobs: Sequence[Job], *, progress: bool = True, desc: str = "runs"
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress)
        for name, result in self._results(jobs):
            bar.set_postfix_str(name)
            bar.update()
            yield name, result
        bar.close()

    def _started_pool(self) -> ProcessPoolExecutor:
        # A pool whose worker died (killed, out of memory) is broken for good: start another.
        if self._pool is not None and getattr(self._pool, "_broken", False):
            self.close()
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=get_context("spawn"),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
            self._stop = weakref.finalize(self, self._pool.shutdown, wait=True, cancel_futures=True)
        return self._pool

    def _results(self, jobs: Sequence[Job]) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self.parallel:
            for job in jobs:
                yield job.name, job.fn(*job.args)
            return
        pool = self._started_pool()
        futures = {pool.submit(_call, 1, job.fn, *job.args): job for job in jobs}
        try:
            for future in as_completed(futures):
                yield futures[future].name, future.result()
        finally:
            # Left early (an error, Ctrl-C): the runs not started are dropped and those
            # training are waited for, so that no worker still writes into a run directory
            # that a later batch of this command (or the next command) trains again.
            for future in futures:
                future.cancel()
            wait(futures)


@dataclass(frozen=True)
class SlurmOptions:
    """What each SLURM job asks for."""

    partition: str | None = None
    gpus: int = 0  # GPUs per run; more than one: one task (one rank) per GPU
    cpus: int = 4  # CPUs per task
    time_min: int = 240
    account: str | None = None
    qos: str | None = None


def _distributed_call(
    threads: int, fn: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """A job's task: with several tasks, one rank of a ``torch.distributed`` job."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        # torchrun's variables; each rank keeps every GPU visible and takes LOCAL_RANK's.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return _call(threads, fn, *args)


@dataclass
class SubmititExecutor(Executor):
    """Runs as submitit jobs: on SLURM (``cluster="slurm"``, returns at once) or on this machine
    (``cluster="local"``, waits).

    Args:
        folder: where submitit keeps each job's pickles and logs.
        cluster: ``"slurm"`` or ``"local"``.
        slurm: the resources of each job.
    """

    folder: Path
    cluster: str = "slurm"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def _executor(self) -> Any:
        import submitit  # the 'slurm' extra; the CLI names it when it is missing

        executor = submitit.AutoExecutor(folder=str(self.folder), cluster=self.cluster)
        tasks = max(1, self.slurm.gpus)
        parameters: dict[str, Any] = {
            "timeout_min": self.slurm.time_min,
            "tasks_per_node": tasks,
            "nodes": 1,
            "cpus_per_task": self.slurm.cpus,
            "name": "umtl",
        }
        if self.slurm.gpus:
            parameters["gpus_per_node"] = self.slurm.gpus
        if self.cluster == "slurm":
            extra = {
                "partition": self.slurm.partition,
                "account": self.slurm.account,
                "qos": self.slurm.qos,
            }
            parameters.update({f"slurm_{k}": v for k, v in extra.items() if v})
        executor.update_parameters(**parameters)
        return executor

    def _ledger(self) -> Path:
        return self.folder / "submitted.json"

    def _earlier_jobs(self, jobs: Sequence[Job]) -> tuple[dict[str, str], list[str]]:
        """What became of the jobs an earlier invocation submitted for these runs (none of which
        has its result yet): those SLURM still has queued or running (name -> job id), which
        must not be submitted again (one run trained twice at once), and those that ended
        (failed, cancelled, timed out, ...) as ``name (job id, state)``."""
        import submitit

        if not self._ledger().is_file():
            return {}, []
        ledger: dict[str, str] = read_json(self._ledger())
        alive, ended = {}, []
        for job in jobs:
            job_id = ledger.get(job.name)
            if job_id is None:
                continue
            state = submitit.SlurmJob(self.folder, job_id).state.split()[0]
            if state in _ALIVE:
                alive[job.name] = job_id
            else:
                ended.append(f"{job.name} ({job_id}, {state})")
        return alive, ended

    def execute(
        self, jobs: Sequence[Job], *, progress: bool = True, desc: str = "runs"
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        executor = self._executor()
        threads = self.slurm.cpus
        alive: dict[str, str] = {}
        failed: list[str] = []
        if self.cluster == "slurm":
            alive, failed = self._earlier_jobs(jobs)
            jobs = [job for job in jobs if job.name not in alive]
            if not jobs:
                raise Submitted([], self.folder, waiting=sorted(alive.values()))
        # One job array for the whole sweep.
        submitted = executor.map_array(
            _distributed_call,
            [threads] * len(jobs),
            [job.fn for job in jobs],
            *zip(*(job.args for job in jobs), strict=True),
        )
        if self.cluster == "slurm":
            ledger = read_json(self._ledger()) if self._ledger().is_file() else {}
            ledger.update(
                {job.name: handle.job_id for job, handle in zip(jobs, submitted, strict=True)}
            )
            write_json(self._ledger(), ledger)
            raise Submitted(
                [handle.job_id for handle in submitted],
                self.folder,
                waiting=sorted(alive.values()),
                failed=failed,
            )
        from submitit.core.utils import UncompletedJobError
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress)
        failures = []
        for job, handle in zip(jobs, submitted, strict=True):
            try:
                # Every task of a multi-GPU job returns the result; rank 0's is the one.
                results = handle.results()
            except UncompletedJobError as err:  # the others go on; their results are kept
                failures.append(f"{job.name} ({_last_line(err)}; log {handle.paths.stderr})")
                continue
            bar.set_postfix_str(job.name)
            bar.update()
            yield job.name, results[0]
        bar.close()
        if failures:
            others = "the others are finished, and " if len(failures) < len(jobs) else ""
            raise TrainingError(
                f"{len(failures)} of {len(jobs)} run(s) failed: {'; '.join(failures)}; "
                f"{others}the same command trains only the failed ones again"
            )


def _last_line(err: BaseException) -> str:
    """The last line of a job's error that is not submitit's pointer to its logs: the
    exception the job raised, ``Type: message``."""
    lines = [
        line.strip()
        for line in str(err).splitlines()
        if line.strip()
        and not line.strip().startswith(("---", "- /", "You can check", "or at paths"))
    ]
    return lines[-1] if lines else type(err).__name__


def make_executor(
    launcher: str, *, workers: int, folder: Path, slurm: SlurmOptions | None = None
) -> Executor:
    """The executor of ``--launcher``."""
    if launcher == "local":
        return LocalExecutor(workers)
    if launcher in ("slurm", "submitit-local"):
        cluster = "slurm" if launcher == "slurm" else "local"
        return SubmititExecutor(folder, cluster=cluster, slurm=slurm or SlurmOptions())
    raise ConfigError(f"--launcher must be one of {list(LAUNCHERS)}, got {launcher!r}")
