"""What a run directory promises: ours or refused, one writer at a time, no stray
temporary files, and a resume only of the same configuration; and a run trained into one
(:func:`train_loop`, :func:`train_in_directory`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable
from functools import partial
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
from uncertainty_mtl.engine.cost import Phases
from uncertainty_mtl.engine.loop import Loop
from uncertainty_mtl.errors import ConfigError, RunDirectoryError

__all__ = [
    "MARKER",
    "RunDirectory",
    "open_run_directory",
    "plain_settings",
    "read_run_config",
    "saved_differences",
    "scene_differences",
    "train_in_directory",
    "train_loop",
]

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


def scene_differences(out: Path, resolved: dict[str, Any]) -> list[str]:
    """How the scene run in ``out`` was configured otherwise than ``resolved``."""
    # a run saved before its data paths were stored absolute: relative to here, as then
    saved = with_absolute_paths(read_run_config(out))
    return config_differences(config_to_dict(saved), resolved)


def saved_differences(
    out: Path, resolved: dict[str, Any], *, ignore: tuple[str, ...] = ()
) -> list[str]:
    """How the run in ``out`` (its ``config.yaml``, a flat mapping) was configured otherwise
    than ``resolved``, less the keys in ``ignore`` (what says how it executes)."""
    path = out / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise RunDirectoryError(f"{path}: cannot read the run's config ({err})") from err
    if not isinstance(saved, dict):
        raise RunDirectoryError(f"{path}: not a run's config (expected a mapping)")
    kept = [{k: v for k, v in d.items() if k not in ignore} for d in (saved, resolved)]
    return config_differences(*kept)


#: How a run directory's saved config is compared with the one asked to resume it.
Differences = Callable[[Path, dict[str, Any]], list[str]]


def _check(out: Path, resolved: dict[str, Any], resume: bool, differences: Differences) -> None:
    last = out / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise RunDirectoryError(
                f"--resume: {last} does not exist (the run saved no checkpoint yet); "
                "start it again without --resume"
            )
        diffs = differences(out, resolved)
        if diffs:
            raise ConfigError(f"--resume: {out} was trained with another config: {diffs}")
    elif last.exists() or (out / "results.json").exists():
        raise RunDirectoryError(f"{out}: already holds a run; use --resume or another --out")


def open_run_directory(
    out: str | os.PathLike[str],
    resolved: dict[str, Any],
    *,
    resume: bool,
    main: bool = True,
    differences: Differences = scene_differences,
) -> RunDirectory:
    """Claims ``out`` for a run before anything is written into it.

    The main process claims the directory (absent, empty or ours; anything else refused),
    takes its lock, checks it against ``resume``, and removes the temporary files a killed run
    left; other ranks only check. ``differences`` compares the config a run was trained with
    to ``resolved`` before a resume (default: a scene run's).

    Raises:
        RunDirectoryError: ``out`` is not ours, is locked by another process, already holds a
            run (without ``resume``), or holds no checkpoint (with it).
        ConfigError: with ``resume``, the run was trained with another config.
    """
    out = Path(out)
    if not main:
        _check(out, resolved, resume, differences)
        return RunDirectory(out, None)
    if resume and not (out / MARKER).is_file() and not (out / _LEGACY[0]).is_file():
        raise RunDirectoryError(f"--resume: {out} is not a run directory of umtl train")
    created = not out.exists() or (out.is_dir() and not any(out.iterdir()))
    claim_directory(out, MARKER, "umtl run", legacy=_LEGACY)
    lock = DirectoryLock(out).acquire()
    try:
        _check(out, resolved, resume, differences)
        remove_temporaries([out, out / "checkpoints"])
    except BaseException:
        lock.release()
        raise
    return RunDirectory(out, lock, created=created)


def train_loop(
    make: Callable[[], Loop],
    *,
    resume: bool,
    phases: Phases,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Builds a run's loop (``make``, phase ``setup``), resumes it from ``last.pt`` when asked,
    trains it and returns :meth:`Loop.finish`'s result; the caller holds the run directory
    (:func:`~uncertainty_mtl.engine.rundir.open_run_directory`)."""
    loop: Loop | None = None
    try:
        with phases("setup"):  # data opened, model built, state resumed
            loop = make()
            if resume:
                loop.resume()
            loop.open_run_directory()
        seconds = loop.run(on_step)
        return loop.finish(seconds)
    finally:
        if loop is not None:
            loop.close()


def plain_settings(settings: Any) -> dict[str, Any]:
    """A study run's settings (a dataclass) as ``config.yaml`` holds them: plain values, lists
    for tuples."""
    plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(settings)))
    return plain


def train_in_directory(
    loop_type: Any,
    settings: Any,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """A study's run trained into ``run_dir``, which it claims and locks first:
    ``loop_type(settings, run_dir, progress=, phases=)`` (a
    :class:`~uncertainty_mtl.engine.loop.Loop`), its ``settings`` a dataclass saved as
    ``config.yaml``. With ``resume``, from the last checkpoint, refused if the saved settings
    differ from ``settings`` in more than ``loop_type.volatile`` (what says how it executes).
    ``on_step`` is called with the step number after every step. Returns the run's result."""
    claimed = open_run_directory(
        run_dir,
        plain_settings(settings),
        resume=resume,
        differences=partial(saved_differences, ignore=loop_type.volatile),
    )
    try:
        phases = Phases()
        return train_loop(
            lambda: loop_type(settings, run_dir, progress=progress, phases=phases),
            resume=resume,
            phases=phases,
            on_step=on_step,
        )
    finally:
        claimed.close()
