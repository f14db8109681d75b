"""Checkpoints and the random state they carry, written atomically and read without running
code: a checkpoint holds tensors and plain values only (dicts, lists, tuples, numbers,
strings, ``None``), so ``torch.load(weights_only=True)`` reads it, and a file that would need
arbitrary unpickling is refused in one line."""

from __future__ import annotations

import io
import json
import math
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct

from uncertainty_mtl._io import atomic_write, write_text
from uncertainty_mtl.errors import RunDirectoryError

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state", "truncate_log"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes ``state`` with ``torch.save`` so that a reader never sees a partial file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


#: What checkpoints written before RNG states were stored as tensors need beyond plain values:
#: NumPy's generator state was an array (``numpy.ndarray`` rebuilt from its dtype). Allowed
#: only for a file that names nothing else.
_LEGACY_GLOBALS: tuple[Any, ...] = (
    _reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
)
_LEGACY_NAMES = {f"{g.__module__}.{g.__qualname__}" for g in _LEGACY_GLOBALS}
#: How ``weights_only`` names a global it refused ("Unsupported global: GLOBAL io.open ...",
#: "Trying to load unsupported GLOBAL posix.mkdir whose module posix is blocked").
_UNSUPPORTED_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL (\S+)", re.IGNORECASE)


def load_checkpoint(
    path: Path, device: torch.device | str, *, keys: tuple[str, ...] = ("model", "step")
) -> dict[str, Any]:
    """A checkpoint of ours, with at least ``keys``, read with ``weights_only=True``: loading
    never runs code from the file.

    Raises:
        RunDirectoryError: the file is missing, truncated, corrupt, not one of ours, or would
            need arbitrary unpickling (a global other than tensors and plain values).
    """
    try:
        state: dict[str, Any] = _load(path, device)
    except FileNotFoundError as err:
        raise RunDirectoryError(f"{path}: no such checkpoint") from err
    except _Refused as err:
        raise RunDirectoryError(
            f"{path}: refused; loading it would run code named in the file ({err.name}), and "
            "a checkpoint of umtl holds only tensors and plain values. Load only files from "
            "a source you trust"
        ) from None
    except Exception as err:  # torch.load's many ways to fail on a damaged file
        raise RunDirectoryError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {_first_line(err)}); "
            "the file is truncated or damaged"
        ) from err
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise RunDirectoryError(f"{path}: not a checkpoint of umtl (no {missing})")
    return state


class _Refused(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _load_plain(path: Path, device: torch.device | str) -> Any:
    """``torch.load(weights_only=True)``; a global it refuses is :class:`_Refused`."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED_GLOBAL.search(str(err))
        if found is None:
            raise  # damaged, not refused
        raise _Refused(found.group(1)) from None


def _load(path: Path, device: torch.device | str) -> Any:
    try:
        return _load_plain(path, device)
    except _Refused as refused:
        if refused.name not in _LEGACY_NAMES:
            raise
    # A checkpoint of ours from before RNG states were plain: its NumPy array, nothing else.
    with torch.serialization.safe_globals(list(_LEGACY_GLOBALS)):
        return _load_plain(path, device)


def _first_line(err: BaseException) -> str:
    text = str(err)
    # weights_only's own message opens with advice to load unsafely; the reason comes after.
    _, marker, reason = text.partition("WeightsUnpickler error:")
    lines = (reason if marker else text).strip().splitlines()
    return lines[0] if lines else ""


def rng_state() -> dict[str, Any]:
    """Every random generator a step may draw from: torch (CPU and CUDA), NumPy, Python, as
    tensors and plain values (NumPy's key as an int64 tensor, Python's as a tuple of ints)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores :func:`rng_state`'s generators (also from a checkpoint that stored NumPy's
    state as its legacy tuple)."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    np.random.set_state(numpy_state)
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
