"""Settings that clients set on the server (xtts-api-server's /set_tts_settings), one set per API key.

Kept in one small JSON file beside the voices (`VOICES_DIR/.xtts-api-settings.json`), so every server (replica)
on that folder applies the same ones and they survive a restart. This module owns the file's content; the folder
(`services/shared_folder.py`) owns its writes: reads are cached by the file's version (one `stat`), and a change
is read, merged and written atomically under the folder's lock for this file, so two replicas setting at once
lose neither change. Blocking file I/O: call it from a worker thread.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from services.shared_folder import SharedFolder, Version

logger = logging.getLogger(__name__)

Values = dict[str, object]


class ClientSettingsFile:
    """The settings file: one JSON object, each owner's values under its key."""

    def __init__(self, path: Path) -> None:
        self.folder = SharedFolder(path.parent)
        self.name = path.name
        self._cached: tuple[Version, dict[str, Values]] | None = None

    def read(self, owner: str | None) -> Values:
        """The values `owner` (an API key's id; None with keys off) has set; {} when none."""
        return dict(self._read_all().get(_owner_key(owner), {}))

    def update(self, owner: str | None, changed: Values) -> Values:
        """Merge `changed` into the owner's values; returns them."""
        with self.folder.locked(self.name):  # other threads and processes on this folder wait here
            everything = self._read_all()
            values = {**everything.get(_owner_key(owner), {}), **changed}
            everything = {**everything, _owner_key(owner): values}
            self.folder.write(self.name, json.dumps(everything).encode(), replace=True)
        return values

    def _read_all(self) -> dict[str, Values]:
        version = self.folder.version(self.name)
        cached = self._cached
        if version is None:
            return {}
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            data, version = self.folder.read(self.name)
            loaded = json.loads(data)
            everything = {str(k): dict(v) for k, v in loaded.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as error:
            logger.warning("ignoring unreadable client settings %s in %s: %s", self.name, self.folder.root, error)
            everything = {}
        self._cached = (version, everything)
        return everything


def _owner_key(owner: str | None) -> str:
    return "" if owner is None else f"key:{owner}"
