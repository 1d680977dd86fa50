"""Saved voices on disk: one safetensors file per voice in VOICES_DIR, written atomically.

safetensors holds raw tensors plus string metadata and runs no code on load, so a planted or
tampered file can at worst fail to load. This module is the only code that touches VOICES_DIR.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from services.engine.latents import VoiceLatents, normalize_latents
from services.errors import InvalidLatents, InvalidVoiceId, VoiceExists, VoiceNotFound, VoiceUnreadable
from services.ids import ID_PATTERN, is_valid_id

logger = logging.getLogger(__name__)

_SUFFIX = ".safetensors"
_TEMP_PREFIX = ".tmp-"
FORMAT_VERSION = "1"


def _temp_prefix() -> str:
    """Temporary files name their writer (`.tmp-<pid>@<host>~`), so a restart removes only dead writers'."""
    return f"{_TEMP_PREFIX}{os.getpid()}@{socket.gethostname()}~"


def _writer_alive(temp_name: str) -> bool:
    """Whether the process that is writing this temporary file still runs (on this host; elsewhere: assume so)."""
    writer, separator, _ = temp_name.removeprefix(_TEMP_PREFIX).partition("~")
    pid, at, host = writer.partition("@")
    if not (separator and at and pid.isdigit()):
        return False  # not named by a writer: a leftover
    if host != socket.gethostname():
        return True  # another machine's replica on a shared folder: only its age tells
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        pass
    return True


@dataclass(frozen=True)
class VoiceRecord:
    """A saved voice's metadata, as listed."""

    voice_id: str
    name: str
    description: str
    created_at: str
    size_bytes: int


class VoiceStorage(Protocol):
    """What the voice service needs of a store (a folder here; an object store could follow). Blocking calls.

    Every replica of the server may share one store: writes must be atomic (a reader sees the old voice or the
    new one, never half), and `version` must change on every write so replicas notice (a file's inode, size and
    mtime here; an object store's ETag).
    """

    def version(self, voice_id: str) -> Hashable | None:
        """A token that changes whenever the voice is written; None if there is no such voice."""
        ...

    def save(
        self, voice_id: str, latents: VoiceLatents, name: str, description: str, overwrite: bool
    ) -> VoiceRecord: ...

    def load(self, voice_id: str) -> tuple[VoiceRecord, VoiceLatents]: ...

    def records(self) -> list[VoiceRecord]: ...

    def delete(self, voice_id: str) -> None: ...


class VoiceStore:
    """Saved voices in one folder. Blocking file I/O: call it from a worker thread."""

    def __init__(self, root: Path, latent_dim: int, embedding_dim: int) -> None:
        self.root = root
        self.latent_dim = latent_dim
        self.embedding_dim = embedding_dim
        root.mkdir(parents=True, exist_ok=True)

    def remove_leftovers(self, max_age_s: float = 300.0) -> int:
        """Delete temporary files a crash left behind mid-write; returns how many. Other servers (replicas)
        on this folder may be writing theirs right now: a temporary file is a leftover once the process
        that wrote it (named in it) is gone, or when it is older than any save takes."""
        removed = 0
        cutoff = time.time() - max_age_s
        for temp in self.root.glob(f"{_TEMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if not _writer_alive(temp.name) or temp.stat().st_mtime <= cutoff:
                    temp.unlink()
                    removed += 1
        return removed

    def _path(self, voice_id: str) -> Path:
        # Ids are validated where requests come in (422); this guard keeps any other caller from building
        # a path outside VOICES_DIR.
        if not isinstance(voice_id, str) or not is_valid_id(voice_id):
            raise InvalidVoiceId("voice id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'", pattern=ID_PATTERN)
        return self.root / f"{voice_id}{_SUFFIX}"

    def exists(self, voice_id: str) -> bool:
        return self._path(voice_id).is_file()

    def version(self, voice_id: str) -> tuple[int, int, int] | None:
        """What identifies the file now (inode, size, mtime): every save renames a new file into place, so
        this changes on each save, from this process or any other sharing the folder; None if there is none."""
        try:
            stat = self._path(voice_id).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def save(self, voice_id: str, latents: VoiceLatents, name: str, description: str, overwrite: bool) -> VoiceRecord:
        """Write a voice: temporary file in the same folder, fsync, then rename (or link, to refuse overwrites)."""
        path = self._path(voice_id)
        if not overwrite and path.exists():
            raise VoiceExists(f"voice {voice_id!r} already exists; set overwrite to replace it", voice_id=voice_id)
        metadata = {
            "format_version": FORMAT_VERSION,
            "voice_id": voice_id,
            "name": name,
            "description": description,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        payload = save(
            {
                "gpt_cond_latent": latents.gpt_cond_latent.detach().float().cpu().contiguous(),
                "speaker_embedding": latents.speaker_embedding.detach().float().cpu().contiguous(),
            },
            metadata=metadata,
        )
        descriptor, temp_name = tempfile.mkstemp(prefix=_temp_prefix(), suffix=_SUFFIX, dir=self.root)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(temp_name, path)
            else:
                try:
                    os.link(temp_name, path)  # fails if another save got there first
                except FileExistsError:
                    raise VoiceExists(f"voice {voice_id!r} already exists", voice_id=voice_id) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
        self._sync_folder()
        return self._record(voice_id, path, metadata)

    def _sync_folder(self) -> None:
        folder = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def load(self, voice_id: str) -> tuple[VoiceRecord, VoiceLatents]:
        """A voice's record and latents in model shapes (whatever shapes the file holds)."""
        path = self._path(voice_id)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                cond = handle.get_tensor("gpt_cond_latent")
                embedding = handle.get_tensor("speaker_embedding")
        except FileNotFoundError:
            raise VoiceNotFound(f"no saved voice {voice_id!r}", voice_id=voice_id) from None
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            raise VoiceUnreadable(f"saved voice {voice_id!r} is unreadable: {error}", voice_id=voice_id) from error
        try:
            latents = normalize_latents(cond, embedding, self.latent_dim, self.embedding_dim)
        except InvalidLatents as error:
            raise VoiceUnreadable(f"saved voice {voice_id!r} does not fit this model: {error}") from error
        return self._record(voice_id, path, metadata), latents

    def records(self) -> list[VoiceRecord]:
        """Every readable voice, oldest first; unreadable files are logged and skipped."""
        records = []
        for path in self.root.glob(f"*{_SUFFIX}"):
            voice_id = path.name[: -len(_SUFFIX)]
            if path.name.startswith(_TEMP_PREFIX) or not is_valid_id(voice_id):
                continue
            try:
                with safe_open(str(path), framework="pt") as handle:
                    metadata = handle.metadata() or {}
            except (SafetensorError, OSError) as error:
                logger.warning("skipping unreadable voice file %s: %s", path.name, error)
                continue
            with contextlib.suppress(FileNotFoundError):
                records.append(self._record(voice_id, path, metadata))
        return sorted(records, key=lambda record: (record.created_at, record.voice_id))

    def delete(self, voice_id: str) -> None:
        try:
            self._path(voice_id).unlink()
        except FileNotFoundError:
            raise VoiceNotFound(f"no saved voice {voice_id!r}", voice_id=voice_id) from None
        self._sync_folder()

    @staticmethod
    def _record(voice_id: str, path: Path, metadata: dict[str, str]) -> VoiceRecord:
        return VoiceRecord(
            voice_id=voice_id,
            name=metadata.get("name", voice_id),
            description=metadata.get("description", ""),
            created_at=metadata.get("created_at", ""),
            size_bytes=path.stat().st_size,
        )
