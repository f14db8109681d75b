"""The local executor's pool: started once, reused by every batch of a command, replaced when
a worker dies, stopped by ``close``."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from uncertainty_mtl.experiments.executors import Job, LocalExecutor


def _pids(executor: LocalExecutor, n: int) -> set[int]:
    # os.getpid is importable by name in a spawned worker; each job answers with its process.
    jobs = [Job(f"job{i}", os.getpid, ()) for i in range(n)]  # type: ignore[arg-type]
    return {pid for _, pid in executor.execute(jobs, progress=False)}  # type: ignore[misc]


@pytest.mark.slow
def test_batches_of_a_command_share_one_pool_of_workers():
    with LocalExecutor(workers=2) as executor:
        first = _pids(executor, 6)
        second = _pids(executor, 6)
        assert os.getpid() not in first
        assert 1 <= len(first) <= 2
        assert second <= first  # the same processes: no start, no imports again
    assert executor._pool is None
    with executor:  # a batch after close starts a new pool
        assert not _pids(executor, 2) & first


@pytest.mark.slow
def test_a_pool_whose_worker_died_is_replaced_for_the_next_batch():
    with LocalExecutor(workers=2) as executor:
        before = _pids(executor, 2)
        with pytest.raises(BrokenProcessPool):
            list(executor.execute([Job("dies", os._exit, (3,))], progress=False))
        after = _pids(executor, 4)
        assert after and not after & before


def test_one_worker_runs_in_this_process_without_a_pool():
    executor = LocalExecutor(workers=1)
    assert _pids(executor, 3) == {os.getpid()}
    assert executor._pool is None
