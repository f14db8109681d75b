"""Decoded frames of a split as memory-mapped arrays, rebuilt when a source file changes."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from uncertainty_mtl._io import write_json
from uncertainty_mtl.data.labels import instance_ids_from_uint16, instance_ids_to_uint16
from uncertainty_mtl.data.scene_files import (
    SceneDataError,
    SceneFiles,
    check_sizes,
    read_scene_arrays,
)

__all__ = ["ArrayCache", "fingerprint"]

# Cached arrays are stored compactly: instance ids as uint16 (-1 -> 65535), like the PNG.
_CACHE_DTYPES = {
    "image": np.uint8,
    "label_ids": np.uint8,
    "instance_ids": np.uint16,
    "disparity": np.uint16,
}
#: 2: source files are fingerprinted by inode and ctime too (a file rewritten with its old size
#: and modification time was taken for the old one).
_CACHE_VERSION = 2


def fingerprint(samples: Sequence[SceneFiles], fields: Sequence[str]) -> list[list[Any]]:
    """Per source file: its absolute path (a root given relative or absolute is the same
    root), size, modification time, inode and status-change time.

    A rewrite in place changes the ctime even when the size and the mtime are set back (setting
    the mtime is itself a change of status), and a file replaced by another (a rename onto it)
    has another inode: either rebuilds the cache. The ctime cannot be set from user space.
    """
    rows = []
    for sample in samples:
        for field in fields:
            path = sample.image if field == "image" else sample.path(field)
            stat = path.stat()
            where = os.path.abspath(path)
            rows.append([where, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns])
    return rows


def _remove_dead_builds(parent: Path, prefix: str) -> None:
    """Removes the temporary build directories (``<prefix><pid>.<random>``) of processes that
    no longer run, e.g. a build killed with ``kill -9``; another process's build goes on."""
    for path in parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].partition(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


@contextmanager
def _builders_excluded(parent: Path) -> Iterator[None]:
    """Held while a build swaps its result into place: an exclusive ``flock`` on the cache's
    parent directory, so that a builder never removes a cache another builder has just put
    there (and may be reading). Where the file system cannot lock, the swap goes on unlocked."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        with suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class ArrayCache:
    """Decoded frames of one split as memory-mapped ``.npy`` files, one per field.

    ``index.json`` records each source file's size, modification time, inode and ctime
    (:func:`fingerprint`); when any differs, the cache is rebuilt. So is a cache whose arrays
    do not open with the shape and type the index promises (a truncated or damaged ``.npy``). A
    build writes into a temporary directory that is renamed into place, so an interrupted build
    leaves no half-written cache behind.
    """

    def __init__(
        self,
        directory: Path,
        samples: Sequence[SceneFiles],
        fields: Sequence[str],
        *,
        progress: bool = True,
    ) -> None:
        self.directory = directory
        self.fields = tuple(fields)
        expected = {
            "version": _CACHE_VERSION,
            "fields": list(self.fields),
            "files": fingerprint(samples, self.fields),
        }
        if not self._matches(expected):
            self._build(samples, expected, progress=progress)
        self._arrays: dict[str, NDArray[Any]] | None = None

    def _matches(self, expected: dict[str, Any]) -> bool:
        """Whether the cache on disk was built from these files and its arrays are whole."""
        try:
            with open(self.directory / "index.json", encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, json.JSONDecodeError):
            return False
        if not isinstance(index, dict) or any(index.get(k) != v for k, v in expected.items()):
            return False
        shape = index.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2):
            return False
        frames = len(expected["files"]) // max(1, len(self.fields))
        return all(
            self._array_is_whole(field, (frames, *shape) + ((3,) if field == "image" else ()))
            for field in self.fields
        )

    def _array_is_whole(self, field: str, shape: tuple[int, ...]) -> bool:
        """Whether ``<field>.npy`` opens (header and data) with ``shape`` and its cache type."""
        try:
            array = np.load(self.directory / f"{field}.npy", mmap_mode="r")
        except (OSError, ValueError, EOFError):  # missing, truncated, or not an .npy file
            return False
        return bool(array.shape == shape and array.dtype == _CACHE_DTYPES[field])

    def _build(
        self, samples: Sequence[SceneFiles], expected: dict[str, Any], *, progress: bool
    ) -> None:
        shapes = {check_sizes(s, self.fields) for s in samples}
        if len(shapes) > 1:
            raise SceneDataError(
                f"the cache needs one image size per split; found {sorted(shapes)} "
                "(build the data set with cache_dir=None)"
            )
        (height, width) = shapes.pop()
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.directory.name}."
        _remove_dead_builds(self.directory.parent, prefix)
        tmp = Path(tempfile.mkdtemp(dir=self.directory.parent, prefix=f"{prefix}{os.getpid()}."))
        try:
            arrays = {}
            for field in self.fields:
                shape = (len(samples), height, width) + ((3,) if field == "image" else ())
                arrays[field] = np.lib.format.open_memmap(
                    tmp / f"{field}.npy", mode="w+", dtype=_CACHE_DTYPES[field], shape=shape
                )
            for i, sample in enumerate(
                tqdm(
                    samples,
                    desc=f"caching {self.directory.name}",
                    unit="frame",
                    leave=False,
                    disable=not progress,
                )
            ):
                for field, array in read_scene_arrays(sample, self.fields).items():
                    if field == "instance_ids":
                        array = instance_ids_to_uint16(array)
                    arrays[field][i] = array
            for array in arrays.values():
                array.flush()
            del arrays
            write_json(tmp / "index.json", expected | {"shape": [height, width]})
            with _builders_excluded(self.directory.parent):
                if self._matches(expected):
                    # another process (e.g. another DDP rank) finished the same build first,
                    # and may be reading it already: keep it
                    shutil.rmtree(tmp, ignore_errors=True)
                    return
                if self.directory.exists():  # a stale cache
                    shutil.rmtree(self.directory, ignore_errors=True)
                os.replace(tmp, self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def __getitem__(self, index: int) -> dict[str, NDArray[Any]]:
        if self._arrays is None:  # opened lazily, so that each worker process maps its own
            self._arrays = {f: self._open(f) for f in self.fields}
        out = {f: np.array(a[index]) for f, a in self._arrays.items()}
        if "instance_ids" in out:
            out["instance_ids"] = instance_ids_from_uint16(out["instance_ids"])
        return out

    def _open(self, field: str) -> NDArray[Any]:
        path = self.directory / f"{field}.npy"
        try:
            array: NDArray[Any] = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:
            # Checked when the data set was built: it was damaged since, under a running job.
            raise SceneDataError(
                f"{path}: the cache was damaged after it was checked ({err}); run again to "
                "rebuild it"
            ) from err
        return array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}
