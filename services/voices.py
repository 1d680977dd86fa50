"""Voices by id: saved voices first, then built-in speakers, served through the latent cache."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Literal

import anyio

from services.admission import AdmissionGate
from services.audio_intake import check_usable, decode_reference
from services.cache import SpeakerCache
from services.engine.cloning import CloneSettings
from services.engine.latents import LatentValues, VoiceLatents
from services.engine.protocol import Engine
from services.errors import InvalidInput, VoiceNotFound
from services.ids import is_valid_id
from services.reference_files import ReferenceFolder
from services.voice_store import VoiceRecord, VoiceStorage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedVoice:
    """A saved voice with its latents (CPU tensors, for answering requests)."""

    record: VoiceRecord
    latents: VoiceLatents


@dataclass(frozen=True)
class VoiceEntry:
    """A voice as clients list it: the id requests use, a display name, and where it comes from."""

    voice_id: str
    name: str
    source: Literal["saved", "builtin"]


@dataclass(frozen=True)
class CloneLimits:
    """How much reference audio one clone may bring (MAX_CLONE_FILES, MAX_CLONE_SECONDS)."""

    max_files: int = 10
    max_seconds: float = 300.0


class VoiceService:
    """Resolves speaker ids and keeps saved voices and the cache consistent.

    Voice ids reaching `save`, `get` and `delete` have been checked where the request came in;
    the store refuses any other id before building a path.
    """

    def __init__(
        self,
        engine: Engine,
        store: VoiceStorage,
        cache: SpeakerCache,
        gate: AdmissionGate | None = None,
        clone_limits: CloneLimits | None = None,
        references: ReferenceFolder | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.cache = cache
        self.gate = gate
        self.clone_limits = clone_limits or CloneLimits()
        self.references = references or ReferenceFolder(None, 0)  # REFERENCE_AUDIO_DIR; unset: paths refused
        self._versions: dict[str, Hashable] = {}  # of the file each cached voice came from

    async def resolve(self, speaker_id: str) -> VoiceLatents:
        """Latents on the model's device for a saved voice or, failing that, a built-in speaker."""
        builtin = self.engine.builtin_speakers.get(speaker_id)
        not_found = VoiceNotFound(f"no saved voice or built-in speaker {speaker_id!r}", voice_id=speaker_id)
        if not is_valid_id(speaker_id):
            # Not a possible saved-voice id (built-in names have spaces): only a built-in can match.
            if builtin is None:
                raise not_found
            return builtin
        # A cheap check per request: the folder may be shared (replicas, another process) and a voice saved,
        # overwritten or deleted there must not be served stale from this process's cache.
        version = await anyio.to_thread.run_sync(self.store.version, speaker_id)
        if self._versions.get(speaker_id) != version:
            self.cache.invalidate(speaker_id)
            if version is None:
                self._versions.pop(speaker_id, None)  # only voices on disk are remembered: the dict stays bounded
            else:
                self._versions[speaker_id] = version
        if version is None:
            if builtin is not None:
                return builtin
            raise not_found
        try:
            return await self.cache.get_or_load(speaker_id, lambda: self._load_to_device(speaker_id))
        except VoiceNotFound:
            if builtin is not None:
                return builtin
            raise not_found from None

    async def _load_to_device(self, voice_id: str) -> VoiceLatents:
        _record, latents = await anyio.to_thread.run_sync(self.store.load, voice_id)
        return latents.to(self.engine.device)

    async def save(
        self, voice_id: str, latents: VoiceLatents, name: str, description: str, overwrite: bool
    ) -> VoiceRecord:
        record = await anyio.to_thread.run_sync(
            lambda: self.store.save(voice_id, latents, name, description, overwrite)
        )
        self.cache.invalidate(voice_id)
        return record

    async def save_latents(
        self,
        voice_id: str,
        gpt_cond_latent: LatentValues,
        speaker_embedding: LatentValues,
        name: str,
        description: str,
        overwrite: bool,
    ) -> VoiceRecord:
        """Save latents in any of coqui's shapes (422 for a shape this model cannot use)."""
        latents = self.engine.normalize_latents(gpt_cond_latent, speaker_embedding)
        return await self.save(voice_id, latents, name, description, overwrite)

    async def get(self, voice_id: str) -> SavedVoice:
        record, latents = await anyio.to_thread.run_sync(self.store.load, voice_id)
        return SavedVoice(record, latents)

    async def records(self) -> list[VoiceRecord]:
        return await anyio.to_thread.run_sync(self.store.records)

    async def catalogue(self) -> list[VoiceEntry]:
        """Every voice a request may name: saved voices (oldest first), then built-in speakers that no saved
        voice shadows (a saved voice wins over a built-in speaker of the same name)."""
        saved = await self.records()
        saved_ids = {record.voice_id for record in saved}
        builtin = sorted(name for name in self.engine.builtin_speakers if name not in saved_ids)
        return [VoiceEntry(record.voice_id, record.name, "saved") for record in saved] + [
            VoiceEntry(name, name, "builtin") for name in builtin
        ]

    async def delete(self, voice_id: str) -> None:
        await anyio.to_thread.run_sync(self.store.delete, voice_id)
        self.cache.invalidate(voice_id)

    async def clone(self, uploads: list[tuple[str, bytes]], settings: CloneSettings) -> VoiceLatents:
        """Latents from (filename, bytes) reference clips; the same clips and settings are computed once.

        Bounded before any decoding (file count, and files x max_ref_length seconds), and admitted like
        speech: it waits for a slot of the same gate (429 when the queue is full) and holds it while it
        decodes and computes. Cancelling the caller's task (a client that left) stops it between steps.
        """
        limits = self.clone_limits
        if len(uploads) > limits.max_files:
            raise InvalidInput(
                f"{len(uploads)} reference files; at most {limits.max_files} (MAX_CLONE_FILES)",
                max_files=limits.max_files,
            )
        if len(uploads) * settings.max_ref_length > limits.max_seconds:
            raise InvalidInput(
                f"{len(uploads)} files of up to max_ref_length={settings.max_ref_length} s may hold more than "
                f"MAX_CLONE_SECONDS ({limits.max_seconds:g} s) of reference audio; send fewer files or lower "
                "max_ref_length",
                max_seconds=limits.max_seconds,
            )
        digest = hashlib.sha256(repr(sorted(asdict(settings).items())).encode())
        for _name, data in uploads:
            digest.update(hashlib.sha256(data).digest())

        async def compute() -> VoiceLatents:
            if self.gate is not None:
                await self.gate.acquire()
            started = time.perf_counter()
            try:
                clips = []
                for name, data in uploads:
                    samples = await anyio.to_thread.run_sync(decode_reference, data, name, settings.max_ref_length)
                    check_usable(samples, name)
                    clips.append(samples)
                return await self.engine.clone_voice(clips, settings)
            finally:
                if self.gate is not None:
                    self.gate.release(time.perf_counter() - started)

        return await self.cache.get_or_load(f"clone:{digest.hexdigest()}", compute)

    async def clone_files(self, paths: list[str], settings: CloneSettings | None = None) -> VoiceLatents:
        """Latents from files named by path (`audio_file_path`): each path checked before anything is read or any
        model work starts (403 outside REFERENCE_AUDIO_DIR or with none set), then read and cloned as uploads."""
        for path in paths:
            self.references.locate(path)
        if len(paths) > self.clone_limits.max_files:
            raise InvalidInput(f"{len(paths)} reference files; at most {self.clone_limits.max_files} (MAX_CLONE_FILES)")
        uploads = [await anyio.to_thread.run_sync(self.references.read, path) for path in paths]
        return await self.clone(uploads, settings or CloneSettings())

    async def preload(self, voice_ids: list[str]) -> int:
        """Load PRELOAD_VOICES into the cache; an unknown name is a warning, not a crash."""
        loaded = 0
        for voice_id in voice_ids:
            try:
                await self.resolve(voice_id)
                loaded += 1
            except Exception as error:
                logger.warning("PRELOAD_VOICES: cannot load %r: %s", voice_id, error)
        return loaded
