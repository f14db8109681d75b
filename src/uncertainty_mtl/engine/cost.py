"""What a run costs: its peak memory and its seconds by phase (training seconds are summed by
the trainer over its sessions, up to each checkpoint)."""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["Phases", "peak_memory", "reset_peak_memory", "time_in_turns"]


class Phases:
    """Wall seconds by phase, summed over every time a phase is entered::

        phases = Phases()
        with phases("validation"):
            ...
        phases.seconds  # {"validation": 1.25}

    A phase entered inside another is counted in both (the outer one's figure is its total).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def reset_peak_memory(device: torch.device) -> None:
    """Starts :func:`peak_memory`'s count now: the CUDA allocator's peak, or on Linux the
    process's peak resident set (``/proc/self/clear_refs``), so that a process that trains runs
    one after another (an executor's worker) reports each run's own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def peak_memory(device: torch.device) -> dict[str, Any]:
    """``peak_memory_mb`` since :func:`reset_peak_memory`, and ``peak_memory_kind``: on a GPU the
    CUDA allocator's peak (``cuda_allocated``); on the CPU the process's peak resident set
    (``process_rss``: it includes the interpreter and the touched pages of memory-mapped data,
    not the data-loader workers), read from ``/proc`` on Linux, else the process's lifetime peak
    (``process_rss_lifetime``), or ``None`` where neither exists."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return {"peak_memory_mb": peak, "peak_memory_kind": "cuda_allocated"}
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                kib = float(line.split()[1])
                return {"peak_memory_mb": kib / 2**10, "peak_memory_kind": "process_rss"}
    try:
        import resource
    except ImportError:  # Windows
        return {"peak_memory_mb": None, "peak_memory_kind": None}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, KiB elsewhere
    return {"peak_memory_mb": rss / scale, "peak_memory_kind": "process_rss_lifetime"}


def time_in_turns(
    builds: Mapping[str, Callable[[], Callable[[], None]]],
    *,
    rounds: int = 7,
    per_block: int = 5,
    threads: int = 1,
    warmup: int = 3,
) -> dict[str, dict[str, float]]:
    """What a step of each method costs (name -> a function that builds its step, ``equal``
    among them; built with ``threads`` torch threads, as it is timed): ``step_seconds``, the
    median seconds of one step with ``threads`` threads (a study's workers train with one
    each), and ``cost_vs_equal``, that over ``equal``'s. The steps run in turns, ``rounds``
    blocks of ``per_block`` steps each after ``warmup`` steps, so that a change in the machine's
    speed falls on every method alike. The caller's thread count is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        steps = {name: build() for name, build in builds.items()}
        for step in steps.values():  # allocations, first-call costs
            for _ in range(warmup):
                step()
        blocks: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(rounds):
            for name, step in steps.items():
                tic = time.perf_counter()
                for _ in range(per_block):
                    step()
                blocks[name].append((time.perf_counter() - tic) / per_block)
    finally:
        torch.set_num_threads(before)
    seconds = {name: statistics.median(b) for name, b in blocks.items()}
    return {
        name: {"step_seconds": s, "cost_vs_equal": s / seconds["equal"]}
        for name, s in seconds.items()
    }
