"""Writing to run and sweep folders safely: atomic files, exclusive folder locks, clear errors.

Nothing here imports langgraph or openai, so commands that only read or plan (`sweep` in its
parent process, `replay`) stay light.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from detente.errors import DetenteError, InputError, Problem
from detente.events import utc_now


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never a part:
    a temporary file beside it, fsynced, then renamed over it. Raises `DiskError`."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DiskError(path, exc) from None


class DiskError(DetenteError):
    """The run folder cannot be written (full, read-only, or gone)."""

    exit_code = 2

    def __init__(self, path: Path, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        super().__init__(f"cannot write {path}: {reason or type(exc).__name__}; everything "
                         "written before is kept")
        self.path = path


class RunLock:
    """An exclusive lock on a run (or sweep) folder for as long as a process writes to it.

    A second process that tries to write the same folder (two `detente run --resume` of one
    run, two sweeps of one folder) is refused with the holder's pid. The lock is the kernel's
    (`flock`): it goes with the process, even on `kill -9`.
    """

    NAME = ".lock"

    def __init__(self, folder: Path, what: str = "run") -> None:
        self.folder = folder
        self.what = what
        self._handle: Any = None

    def __enter__(self) -> RunLock:
        import fcntl

        path = self.folder / self.NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise DiskError(path, exc) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise InputError(self.folder, [Problem("", f"this {self.what} folder is in use by "
                                                   f"{holder}; wait for it to finish or stop "
                                                   "it first")]) from None
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} (detente, since {utc_now()})\n")
            handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()
            self._handle.close()  # closing releases the lock
            self._handle = None
