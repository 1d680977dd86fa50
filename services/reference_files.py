"""`audio_file_path`: reference audio named by a path on this server, read only from REFERENCE_AUDIO_DIR.

The seed's clients (and coqui-style scripts) send a path where they would upload a clip. A server that opens any
path a request names hands its files to whoever can reach it, so by default the answer is 403 before any model
work. With REFERENCE_AUDIO_DIR set, a path that resolves (symlinks and `..` followed) to a regular file inside
that folder is read, and then treated exactly like an upload: the size limit of MAX_UPLOAD_MB, and
`services/audio_intake.py`, which accepts only the audio containers it recognises by their first bytes (a pickle,
a checkpoint or a text file is 415; nothing here is ever unpickled).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from services.errors import PayloadTooLarge, ServerPathRefused, UnsupportedMediaType, VoiceNotFound, echoed

NOT_OFFERED = "reading server paths is not offered; upload the clip to /clone_speaker (wav_file) instead"


class ReferenceFolder:
    """The folder `audio_file_path` may name files in (None: the field is always refused)."""

    def __init__(self, folder: Path | None, max_bytes: int) -> None:
        self.root = folder.resolve(strict=True) if folder is not None else None
        self.max_bytes = max_bytes

    def locate(self, requested: str) -> Path:
        """The file `requested` names (relative to the folder, or absolute), symlinks and `..` resolved.

        Raises ServerPathRefused (403) when no folder is configured or the path leads outside it, VoiceNotFound
        (404) for nothing there. Touches nothing outside the folder beyond resolving the path.
        """
        if self.root is None:
            raise ServerPathRefused(f"audio_file_path {echoed(requested)}: {NOT_OFFERED}", path=requested)
        if "\0" in requested:
            raise ServerPathRefused(f"audio_file_path {echoed(requested)} is not a path", path=requested)
        resolved = (self.root / requested).resolve()  # an absolute `requested` replaces the root
        if not resolved.is_relative_to(self.root):
            raise ServerPathRefused(
                f"audio_file_path {echoed(requested)} is outside REFERENCE_AUDIO_DIR; {NOT_OFFERED}", path=requested
            )
        if not resolved.exists():
            raise VoiceNotFound(f"no file {echoed(requested)} in REFERENCE_AUDIO_DIR", path=requested)
        return resolved

    def read(self, requested: str) -> tuple[str, bytes]:
        """(a name for messages, the bytes) of a regular file in the folder, at most max_bytes; blocking I/O."""
        path = self.locate(requested)
        name = path.relative_to(self.root).as_posix() if self.root is not None else path.name
        # O_NOFOLLOW: a symlink swapped in after `locate` is not followed; O_NONBLOCK: a FIFO does not hang us.
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as error:
            raise VoiceNotFound(f"cannot open {echoed(requested)}: {error.strerror}", path=requested) from None
        with os.fdopen(descriptor, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise UnsupportedMediaType(f"{name!r} is not a regular file", filename=name)
            if info.st_size > self.max_bytes:
                raise PayloadTooLarge(
                    f"{name!r} is over MAX_UPLOAD_MB ({self.max_bytes / 1e6:g} MB)", limit_bytes=self.max_bytes
                )
            data = file.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:  # grew since fstat
            raise PayloadTooLarge(f"{name!r} is over MAX_UPLOAD_MB", limit_bytes=self.max_bytes)
        return name, data
