"""What a run directory promises: ours or refused, one writer at a time, no stray
temporary files, and a resume only of the same configuration."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from uncertainty_mtl._io import DirectoryLock, claim_directory, remove_temporaries
from uncertainty_mtl.config import (
    TrainConfig,
    config_differences,
    config_to_dict,
    load_config,
    with_absolute_paths,
)
from uncertainty_mtl.errors import ConfigError, RunDirectoryError

__all__ = ["MARKER", "RunDirectory", "open_run_directory", "read_run_config"]

#: The file that makes a directory a run of ours.
MARKER = "umtl_run.json"
#: A run directory written before the marker existed.
_LEGACY = ("checkpoints/last.pt",)


class RunDirectory:
    """A claimed, locked run directory; :meth:`close` releases the lock."""

    def __init__(self, path: Path, lock: DirectoryLock | None, *, created: bool = False) -> None:
        self.path = path
        self.lock = lock
        self.created = created

    def close(self) -> None:
        """Releases the lock; a directory this run created and left holding nothing but the
        marker and the lock (it stopped before writing) is removed."""
        if self.lock is None:
            return
        self.lock.release()
        if self.created and {p.name for p in self.path.iterdir()} <= {MARKER, DirectoryLock.NAME}:
            for name in (MARKER, DirectoryLock.NAME):
                (self.path / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.rmdir()


def read_run_config(out: Path) -> TrainConfig:
    """The config a run was trained with (``config.yaml``), resolved with today's defaults."""
    path = out / "config.yaml"
    if not out.exists():
        raise RunDirectoryError(f"{out}: no such directory; expected a run directory of umtl train")
    if not out.is_dir():
        raise RunDirectoryError(f"{out}: not a directory; expected a run directory of umtl train")
    if not path.is_file():
        raise RunDirectoryError(f"{out}: no config.yaml; not a run directory of umtl train")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise RunDirectoryError(f"{path}: cannot read the run's config ({err})") from err
    try:
        # Resolved again, so that keys added since the run started take their defaults.
        return load_config(data=data)
    except ConfigError as err:
        raise RunDirectoryError(f"{path}: not a valid run config ({err})") from err


def _check(out: Path, resolved: dict[str, Any], resume: bool) -> None:
    last = out / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise RunDirectoryError(
                f"--resume: {last} does not exist (the run saved no checkpoint yet); "
                "start it again without --resume"
            )
        # a run saved before its data paths were stored absolute: relative to here, as then
        saved = with_absolute_paths(read_run_config(out))
        diffs = config_differences(config_to_dict(saved), resolved)
        if diffs:
            raise ConfigError(f"--resume: {out} was trained with another config: {diffs}")
    elif last.exists() or (out / "results.json").exists():
        raise RunDirectoryError(f"{out}: already holds a run; use --resume or another --out")


def open_run_directory(
    out: str | os.PathLike[str], resolved: dict[str, Any], *, resume: bool, main: bool = True
) -> RunDirectory:
    """Claims ``out`` for a run before anything is written into it.

    The main process claims the directory (absent, empty or ours; anything else refused),
    takes its lock, checks it against ``resume``, and removes the temporary files a killed run
    left; other ranks only check.

    Raises:
        RunDirectoryError: ``out`` is not ours, is locked by another process, already holds a
            run (without ``resume``), or holds no checkpoint (with it).
        ConfigError: with ``resume``, the run was trained with another config.
    """
    out = Path(out)
    if not main:
        _check(out, resolved, resume)
        return RunDirectory(out, None)
    if resume and not (out / MARKER).is_file() and not (out / _LEGACY[0]).is_file():
        raise RunDirectoryError(f"--resume: {out} is not a run directory of umtl train")
    created = not out.exists() or (out.is_dir() and not any(out.iterdir()))
    claim_directory(out, MARKER, "umtl run", legacy=_LEGACY)
    lock = DirectoryLock(out).acquire()
    try:
        _check(out, resolved, resume)
        remove_temporaries([out, out / "checkpoints"])
    except BaseException:
        lock.release()
        raise
    return RunDirectory(out, lock, created=created)
