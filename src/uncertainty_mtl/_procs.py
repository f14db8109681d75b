"""Worker processes that die with their parent: a pool's workers must not go on
writing after ``kill -9`` of the process that started them."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from typing import Any

__all__ = ["die_with_parent", "loader_worker_init", "loader_worker_options"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Asks the kernel to SIGKILL this process when its parent ends (Linux); exits at once if
    the parent ``parent`` is gone already. Use as a pool's ``initializer`` with
    ``initargs=(os.getpid(),)``; elsewhere it does nothing."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:
        os._exit(1)


def loader_worker_init(parent: int, worker_id: int) -> None:
    """A ``DataLoader`` ``worker_init_fn`` (bind ``parent`` with ``functools.partial``)."""
    del worker_id
    die_with_parent(parent)


def loader_worker_options(workers: int) -> dict[str, Any]:
    """``DataLoader`` keyword arguments that tie its worker processes to this one."""
    if workers <= 0:
        return {}
    return {"worker_init_fn": functools.partial(loader_worker_init, os.getpid())}
