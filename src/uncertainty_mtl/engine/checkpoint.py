"""Checkpoints and the random state they carry, written atomically."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uncertainty_mtl._io import atomic_write, write_text

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state", "truncate_log"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes ``state`` with ``torch.save`` so that a reader never sees a partial file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_checkpoint(path: Path, device: torch.device | str) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(path, map_location=device, weights_only=False)
    return state


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
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    write_text(path, "".join(line + "\n" for line in kept))
