"""Saved voices: one safetensors file per voice (`<voice id>.safetensors`) in VOICES_DIR.

safetensors holds raw tensors plus string metadata and runs no code on load, so a planted or tampered file can at
worst fail to load. The files are read and written through `services/shared_folder.py` (atomic writes, versions,
leftover cleanup), which owns the folder; this module owns their format.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from safetensors import SafetensorError
from safetensors.torch import load, save

from services.engine.latents import VoiceLatents, normalize_latents
from services.errors import InvalidLatents, InvalidVoiceId, VoiceExists, VoiceNotFound, VoiceUnreadable
from services.ids import ID_PATTERN, is_valid_id
from services.shared_folder import LEFTOVER_AGE_S, SharedFolder, Version

logger = logging.getLogger(__name__)

_SUFFIX = ".safetensors"
FORMAT_VERSION = "1"


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
    """Saved voices in one (shared) folder. Blocking file I/O: call it from a worker thread."""

    def __init__(self, root: Path, latent_dim: int, embedding_dim: int) -> None:
        self.folder = SharedFolder(root)
        self.latent_dim = latent_dim
        self.embedding_dim = embedding_dim
        self.folder.create()

    def remove_leftovers(self, max_age_s: float = LEFTOVER_AGE_S) -> int:
        """Delete the temporary files of writes a crash left behind in the folder (voices' and the client
        settings' alike), never one a live server is writing; returns how many."""
        return self.folder.remove_leftovers(max_age_s)

    def _name(self, voice_id: str) -> str:
        # Ids are validated where requests come in (422); this guard keeps any other caller from naming
        # a file outside VOICES_DIR or another kind of file in it.
        if not isinstance(voice_id, str) or not is_valid_id(voice_id):
            raise InvalidVoiceId("voice id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'", pattern=ID_PATTERN)
        return f"{voice_id}{_SUFFIX}"

    def exists(self, voice_id: str) -> bool:
        return self.version(voice_id) is not None

    def version(self, voice_id: str) -> Version | None:
        """The file's (inode, size, mtime): it changes on every save, from this process or any other sharing
        the folder; None if there is no such voice."""
        return self.folder.version(self._name(voice_id))

    def save(self, voice_id: str, latents: VoiceLatents, name: str, description: str, overwrite: bool) -> VoiceRecord:
        """Write a voice atomically; without `overwrite`, VoiceExists if it is there (or another save wins)."""
        file_name = self._name(voice_id)
        exists = VoiceExists(f"voice {voice_id!r} already exists; set overwrite to replace it", voice_id=voice_id)
        if not overwrite and self.folder.version(file_name) is not None:
            raise exists
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
        try:
            self.folder.write(file_name, payload, replace=overwrite)
        except FileExistsError:
            raise exists from None
        return _record(voice_id, metadata, len(payload))

    def load(self, voice_id: str) -> tuple[VoiceRecord, VoiceLatents]:
        """A voice's record and latents in model shapes (whatever shapes the file holds)."""
        try:
            with self.folder.opened(self._name(voice_id)) as (handle, version):
                metadata = _metadata(handle, version[1])
                handle.seek(0)
                tensors = load(handle.read())
            cond, embedding = tensors["gpt_cond_latent"], tensors["speaker_embedding"]
        except FileNotFoundError:
            raise VoiceNotFound(f"no saved voice {voice_id!r}", voice_id=voice_id) from None
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            raise VoiceUnreadable(f"saved voice {voice_id!r} is unreadable: {error}", voice_id=voice_id) from error
        try:
            latents = normalize_latents(cond, embedding, self.latent_dim, self.embedding_dim)
        except InvalidLatents as error:
            raise VoiceUnreadable(f"saved voice {voice_id!r} does not fit this model: {error}") from error
        return _record(voice_id, metadata, version[1]), latents

    def records(self) -> list[VoiceRecord]:
        """Every readable voice, oldest first; unreadable files are logged and skipped."""
        records = []
        for file_name in self.folder.names(_SUFFIX):
            voice_id = file_name.removesuffix(_SUFFIX)
            if not is_valid_id(voice_id):
                continue
            try:
                with self.folder.opened(file_name) as (handle, version):
                    records.append(_record(voice_id, _metadata(handle, version[1]), version[1]))
            except FileNotFoundError:
                continue  # deleted since it was listed
            except (OSError, ValueError) as error:
                logger.warning("skipping unreadable voice file %s: %s", file_name, error)
        return sorted(records, key=lambda record: (record.created_at, record.voice_id))

    def delete(self, voice_id: str) -> None:
        try:
            self.folder.remove(self._name(voice_id))
        except FileNotFoundError:
            raise VoiceNotFound(f"no saved voice {voice_id!r}", voice_id=voice_id) from None


def _metadata(handle: BinaryIO, size: int) -> dict[str, str]:
    """The string metadata in a safetensors header (a little-endian u64 length, then that much JSON), read
    without the tensors (a listing reads only this); ValueError unless the header describes the whole file."""
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise ValueError("too short for a safetensors file")
    (length,) = struct.unpack("<Q", prefix)
    if length > size - 8:
        raise ValueError("its header is longer than the file")
    header = json.loads(handle.read(length))
    try:
        metadata = dict(header.pop("__metadata__", None) or {})
        data_end = max((int(entry["data_offsets"][1]) for entry in header.values()), default=0)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError) as error:
        raise ValueError(f"not a safetensors header: {error!r}") from error
    if 8 + length + data_end != size:
        raise ValueError(f"{size} bytes, where its header describes {8 + length + data_end}")
    return {str(key): str(value) for key, value in metadata.items()}


def _record(voice_id: str, metadata: dict[str, str], size_bytes: int) -> VoiceRecord:
    return VoiceRecord(
        voice_id=voice_id,
        name=metadata.get("name", voice_id),
        description=metadata.get("description", ""),
        created_at=metadata.get("created_at", ""),
        size_bytes=size_bytes,
    )
