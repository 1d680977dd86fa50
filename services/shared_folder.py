"""The voices folder (VOICES_DIR) that every server on it shares: the only code that touches its files.

Several servers may use one folder at once (Ray Serve replicas, two started by hand, machines on NFS). Who owns what:

| file | written by | through |
| --- | --- | --- |
| `<voice id>.safetensors` | `services/voice_store.py` `VoiceStore` | `write` (rename, or link to refuse an overwrite) |
| `.xtts-api-settings.json` and its `.lock` | `services/client_settings.py` `ClientSettingsFile` | `locked`, `write` |
| `.tmp-<pid>@<host>~<random>` | a write in progress, by the process named | `remove_leftovers` (dead writers only) |

Every write is atomic: a temporary file in the same folder, written, flushed and fsynced, then renamed (or linked)
into place and the folder fsynced, so a reader sees the old file or the new one, never half, even after a crash.
A file's version is (inode, size, mtime_ns): every write makes a new inode, so it changes on each write from
any process. Blocking file I/O: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

Version = tuple[int, int, int]  # inode, size, mtime_ns

TEMP_PREFIX = ".tmp-"
LEFTOVER_AGE_S = 300.0  # a write takes well under a second: a temporary file this old is nobody's work in progress

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def temp_prefix() -> str:
    """`.tmp-<pid>@<host>~`: temporary files name their writer, so a cleaner can tell whether it still runs."""
    return f"{TEMP_PREFIX}{os.getpid()}@{socket.gethostname()}~"


def is_leftover(temp_name: str, age_s: float, max_age_s: float = LEFTOVER_AGE_S) -> bool:
    """Whether a temporary file is a crashed write's leftover, never a live writer's work in progress.

    Old (over `max_age_s`): a leftover, whoever wrote it. A name that names no writer (an older version's, or
    planted): a leftover. A writer on this host: a leftover once its pid is gone. A reused pid makes a dead
    writer look alive, never the other way round, so its file waits for the age rule and no live one is lost.
    Another host's writer: only age tells, since `os.kill` asks this host, where the same pid is another process
    or none. This needs distinct host names on a shared folder (Docker and Kubernetes give each container its
    own), and clocks within `max_age_s` of the file server's.
    """
    if age_s >= max_age_s:
        return True
    writer, tilde, _ = temp_name.removeprefix(TEMP_PREFIX).partition("~")
    pid, at, host = writer.partition("@")
    if not (tilde and at and pid.isdigit()):
        return True
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        pass
    return False


class SharedFolder:
    """One folder that several processes read and write, by file name (no paths leave or enter)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if not name or name in (".", "..") or "/" in name or "\0" in name or name.startswith(TEMP_PREFIX):
            raise ValueError(f"not a file name of this folder: {name!r}")
        return self.root / name

    def names(self, suffix: str) -> list[str]:
        """The files whose names end with `suffix`, writes in progress left out; [] if there is no folder."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if e.name.endswith(suffix) and not e.name.startswith(TEMP_PREFIX))

    def version(self, name: str) -> Version | None:
        """The file's version now (one `stat`); None if there is no such file."""
        try:
            return _version(self._path(name).stat())
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def opened(self, name: str) -> Iterator[tuple[BinaryIO, Version]]:
        """The file open for reading, with the version of what it holds (a write meanwhile makes a new file)."""
        with open(self._path(name), "rb") as handle:
            yield handle, _version(os.fstat(handle.fileno()))

    def read(self, name: str) -> tuple[bytes, Version]:
        """The file's bytes and their version; FileNotFoundError if there is none."""
        with self.opened(name) as (handle, version):
            return handle.read(), version

    def write(self, name: str, data: bytes, *, replace: bool) -> Version:
        """Write `data` as `name` atomically; without `replace`, FileExistsError if `name` exists (even when
        another process got there a moment before)."""
        path = self._path(name)
        self.create()
        descriptor, temp_name = tempfile.mkstemp(prefix=temp_prefix(), dir=self.root)
        temp: str | None = temp_name
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                version = _version(os.fstat(handle.fileno()))  # rename and link keep inode, size and mtime
            if replace:
                os.replace(temp_name, path)
                temp = None
            else:
                os.link(temp_name, path)
        finally:
            if temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        self._sync()
        return version

    def remove(self, name: str) -> None:
        """Delete the file; FileNotFoundError if there is none."""
        self._path(name).unlink()
        self._sync()

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold `name`'s lock (the file `<name>.lock`) against every thread and process on this folder, for a
        read-change-write. The thread lock as well: on NFS flock is a POSIX lock, which threads share."""
        path = self._path(f"{name}.lock")
        with _thread_locks_guard:
            thread_lock = _thread_locks.setdefault(path.absolute(), threading.Lock())
        self.create()
        with thread_lock, open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def remove_leftovers(self, max_age_s: float = LEFTOVER_AGE_S) -> int:
        """Delete the temporary files of writes that will never finish (see `is_leftover`), whoever wrote them
        (voices, settings); returns how many. Safe while other servers on this folder write."""
        removed = 0
        now = time.time()
        for name in self._temp_names():
            path = self.root / name
            with contextlib.suppress(FileNotFoundError):
                if is_leftover(name, now - path.stat().st_mtime, max_age_s):
                    path.unlink()
                    removed += 1
        return removed

    def _temp_names(self) -> list[str]:
        try:
            return [entry.name for entry in os.scandir(self.root) if entry.name.startswith(TEMP_PREFIX)]
        except FileNotFoundError:
            return []

    def _sync(self) -> None:
        """fsync the folder: a rename, link or unlink survives a crash only once the folder is on disk."""
        folder = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _version(stat: os.stat_result) -> Version:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
