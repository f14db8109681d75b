"""Checkpoints and the random state they carry, written atomically."""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uncertainty_mtl._io import atomic_write, write_text
from uncertainty_mtl.errors import RunDirectoryError

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state", "truncate_log"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes ``state`` with ``torch.save`` so that a reader never sees a partial file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_checkpoint(
    path: Path, device: torch.device | str, *, keys: tuple[str, ...] = ("model", "step")
) -> dict[str, Any]:
    """A checkpoint of ours, with at least ``keys``.

    Raises:
        RunDirectoryError: the file is missing, truncated, corrupt, or not one of ours.
    """
    try:
        state: dict[str, Any] = torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError as err:
        raise RunDirectoryError(f"{path}: no such checkpoint") from err
    except Exception as err:  # torch.load's many ways to fail on a damaged file
        raise RunDirectoryError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {_first_line(err)}); "
            "the file is truncated or damaged"
        ) from err
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise RunDirectoryError(f"{path}: not a checkpoint of umtl (no {missing})")
    return state


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def rng_state() -> dict[str, Any]:
    """Every random generator a step may draw from: torch (CPU and CUDA), NumPy, Python."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def truncate_log(path: Path, step: int) -> None:
    """Keeps the records of steps up to ``step`` (those after the checkpoint are replayed)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the partial last line of a killed run
        if isinstance(record, dict) and record.get("step", math.inf) <= step:
            kept.append(line)
    write_text(path, "".join(line + "\n" for line in kept))
