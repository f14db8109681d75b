"""What every ``umtl`` command that trains studies shares: argument types, where the runs train
(``--launcher`` and its SLURM options), ``--workers`` and ``--quiet``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from uncertainty_mtl.experiments.executors import LAUNCHERS as _EXECUTOR_LAUNCHERS

if TYPE_CHECKING:
    from uncertainty_mtl.experiments.executors import Executor

#: Where a study's runs train (the executors' list; executors.py imports nothing heavy).
LAUNCHERS = list(_EXECUTOR_LAUNCHERS)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _add_launcher(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the runs train")
    group.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local: processes on this machine (default); slurm: one SLURM job per run (job "
        "arrays for sweeps) through submitit, returns at once; submitit-local: the same path "
        "on this machine, waits",
    )
    group.add_argument("--slurm-partition", default=None, help="SLURM partition")
    group.add_argument("--slurm-account", default=None, help="SLURM account")
    group.add_argument("--slurm-qos", default=None, help="SLURM quality of service")
    group.add_argument(
        "--slurm-gpus",
        type=_non_negative_int,
        default=0,
        help="GPUs per run; several: one rank per GPU (torch.distributed) in one job",
    )
    group.add_argument("--slurm-cpus", type=_positive_int, default=4, help="CPUs per task")
    group.add_argument(
        "--slurm-time", type=_positive_int, default=240, help="minutes per job (default 240)"
    )


def _executor(args: argparse.Namespace, out: str, workers: int) -> Executor:
    from uncertainty_mtl.experiments.executors import SlurmOptions, make_executor

    slurm = SlurmOptions(
        partition=args.slurm_partition,
        gpus=args.slurm_gpus,
        cpus=args.slurm_cpus,
        time_min=args.slurm_time,
        account=args.slurm_account,
        qos=args.slurm_qos,
    )
    return make_executor(args.launcher, workers=workers, folder=Path(out) / "submitit", slurm=slurm)


def _add_common(parser: argparse.ArgumentParser, *, workers_help: str) -> None:
    """``--workers``, ``--quiet`` and where the runs train: what every study takes."""
    parser.add_argument("--workers", type=_positive_int, default=None, help=workers_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_launcher(parser)


def _workers(args: argparse.Namespace) -> int:
    return getattr(args, "workers", None) or (os.cpu_count() or 1)
