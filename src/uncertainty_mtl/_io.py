"""Files and directories of ours: written atomically, claimed with a marker, locked
while a process writes into them, and cleaned of an interrupted writer's temporary files."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from uncertainty_mtl.errors import DirectoryLockedError, RunDirectoryError

__all__ = [
    "DirectoryLock",
    "append_line",
    "atomic_write",
    "claim_directory",
    "is_disk_error",
    "read_json",
    "read_jsonl",
    "remove_temporaries",
    "write_json",
    "write_text",
]

#: Errors of the place written to rather than of our code: full, read-only, not permitted.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_TEMP_PATTERN = ".*.tmp"


def is_disk_error(err: BaseException) -> bool:
    """Whether ``err`` says the file system refused a write (full, read-only, no permission)."""
    return isinstance(err, OSError) and err.errno in _DISK_ERRNOS


def _disk_error(path: Path, err: OSError) -> RunDirectoryError:
    return RunDirectoryError(f"{path}: cannot write ({err.strerror}); nothing there was replaced")


def _file_mode() -> int:
    """The mode ``open()`` would give a new file (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Calls ``write`` on a temporary file beside ``path``, then renames it onto ``path``.

    The rename is atomic on POSIX file systems: readers see the old file or the new one, never
    a partial one, and a crash leaves at most a stray ``.tmp`` file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if is_disk_error(err):
            raise _disk_error(path, err) from err
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_error(err):
            assert isinstance(err, OSError)
            raise _disk_error(path, err) from err
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a finished run's JSON-lines log (``metrics.jsonl``), blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Appends one line to a log; a disk that refuses it is a :class:`RunDirectoryError`.

    A kill can leave the last line partial; readers skip a line that does not parse.
    """
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as err:
        if is_disk_error(err):
            raise _disk_error(Path(path), err) from err
        raise


def remove_temporaries(directories: Iterable[Path], *, recursive: bool = False) -> int:
    """Removes the temporary files :func:`atomic_write` leaves when killed; returns how many."""
    removed = 0
    for directory in directories:
        if directory.is_dir():
            found = directory.rglob(_TEMP_PATTERN) if recursive else directory.glob(_TEMP_PATTERN)
            for path in found:
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed += 1
    return removed


def claim_directory(
    path: str | os.PathLike[str], marker: str, what: str, *, legacy: Iterable[str] = ()
) -> Path:
    """Makes ``path`` ours: created if absent, marked if empty, accepted if it holds ``marker``
    (or, from before markers, one of the ``legacy`` paths); anything else is refused before a
    file is written.

    Args:
        path: the output directory.
        marker: the file name that marks it as ours (written here, JSON).
        what: what the directory holds, for the marker and the message (e.g. "umtl run").
        legacy: relative paths that show a directory written by an older version of ours.

    Raises:
        RunDirectoryError: ``path`` is a file, holds files that are not ours, or cannot be
            written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(
            f"{path}: exists and is not a directory; expected a {what} directory"
        )
    if path.is_dir() and not (path / marker).is_file():
        entries = sorted(p.name for p in path.iterdir())
        if entries and not any((path / rel).exists() for rel in legacy):
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise RunDirectoryError(
                f"{path}: holds files that are not a {what} ({shown}); nothing was written. "
                "Use a new or empty directory"
            )
    if not (path / marker).is_file():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if is_disk_error(err):
                raise _disk_error(path, err) from err
            raise
        write_json(path / marker, {"kind": what, "format": 1})
    return path


class DirectoryLock:
    """An exclusive lock on a directory (a POSIX record lock, ``fcntl.lockf``, on
    ``directory/umtl.lock``), held from :meth:`acquire` until :meth:`release` or the process
    ends: a killed holder leaves no stale lock behind. Unlike ``flock``, a POSIX lock belongs to
    the process, not to the open file: the data-loader workers a training process forks inherit
    the file but not the lock, so they cannot keep it after their parent was killed.

    Raises (on :meth:`acquire`):
        DirectoryLockedError: another process holds it; the message names that process.
        RunDirectoryError: the file system cannot lock or write it.
    """

    NAME = "umtl.lock"

    def __init__(self, directory: str | os.PathLike[str], what: str = "trains into") -> None:
        self.path = Path(directory) / self.NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, _file_mode())
        except OSError as err:
            if is_disk_error(err):
                raise _disk_error(self.path, err) from err
            raise
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)  # e.g. ENOLCK: a file system without locks
                raise RunDirectoryError(f"{self.path}: cannot lock ({err.strerror})") from err
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise DirectoryLockedError(
                f"{self.path.parent}: {holder} {self.what} it; wait for it to finish or use "
                "another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
