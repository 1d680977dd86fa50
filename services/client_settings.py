"""Settings that clients set on the server (xtts-api-server's /set_tts_settings), one set per API key.

Kept in one small JSON file beside the voices, so every server (replica) on that folder applies the same
ones and they survive a restart. Reads are cached by the file's version (one `stat`); writes replace the
file atomically under an exclusive lock, so two replicas setting at once lose neither change.
Blocking file I/O: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

Values = dict[str, object]
_Version = tuple[int, int, int]


class ClientSettingsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cached: tuple[_Version, dict[str, Values]] | None = None

    def read(self, owner: str | None) -> Values:
        """The values `owner` (an API key's id; None with keys off) has set; {} when none."""
        return dict(self._read_all().get(_owner_key(owner), {}))

    def update(self, owner: str | None, changed: Values) -> Values:
        """Merge `changed` into the owner's values; returns them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other processes on this folder wait here too
            everything = self._read_all()
            values = {**everything.get(_owner_key(owner), {}), **changed}
            everything = {**everything, _owner_key(owner): values}
            descriptor, temp_name = tempfile.mkstemp(prefix=".tmp-settings-", dir=self.path.parent)
            try:
                with os.fdopen(descriptor, "w") as handle:
                    json.dump(everything, handle)
                os.replace(temp_name, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp_name)
                raise
        return values

    def _read_all(self) -> dict[str, Values]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            loaded = json.loads(self.path.read_text())
            everything = {str(k): dict(v) for k, v in loaded.items() if isinstance(v, dict)}
        except (OSError, ValueError, AttributeError) as error:
            logger.warning("ignoring unreadable client settings in %s: %s", self.path, error)
            everything = {}
        self._cached = (version, everything)
        return everything


def _owner_key(owner: str | None) -> str:
    return "" if owner is None else f"key:{owner}"
