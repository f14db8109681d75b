"""The errors a user can cause, one hierarchy.

Every :class:`UmtlError` is a user error: its message is one line that names the file or the
config key and what was expected. ``umtl`` prints it as ``umtl: error: ...`` and exits with 2;
any other exception is a bug of ours and keeps its traceback (``umtl --debug`` shows the
traceback of a user error too).

The kinds that are also :class:`ValueError` (config, data) stay catchable as such.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DirectoryLockedError",
    "RunDirectoryError",
    "TrainingError",
    "UmtlError",
]


class UmtlError(Exception):
    """A user error: bad input, a refused directory, a run that cannot go on."""


class ConfigError(UmtlError, ValueError):
    """A configuration or command-line value is not valid; the message names the key."""


class DataError(UmtlError, ValueError):
    """A data set on disk is not what it must be; the message names the file."""


class TrainingError(UmtlError, RuntimeError):
    """Training stopped (e.g. a non-finite loss); the message says why and at which step."""


class RunDirectoryError(UmtlError):
    """An output directory cannot be used: not ours, locked by another process, not writable,
    or holding an unreadable checkpoint; the message names the path."""


class DirectoryLockedError(RunDirectoryError):
    """Another process holds the directory's lock (it trains a run or writes a study there)."""
