"""Voices by id: saved voices first, then built-in speakers, served through the latent cache."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass

import anyio

from models.voice_storage import VoiceRecord, VoiceStore, check_voice_id
from services.audio_intake import check_usable, decode_reference
from services.cache import SpeakerCache
from services.cloning import CloneSettings, compute_voice_latents
from services.errors import InvalidVoiceId, VoiceNotFound
from services.latents import VoiceLatents
from services.tts import TTSEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedVoice:
    """A saved voice with its latents (CPU tensors, for answering requests)."""

    record: VoiceRecord
    latents: VoiceLatents


class VoiceService:
    """Resolves speaker ids and keeps saved voices and the cache consistent."""

    def __init__(self, engine: TTSEngine, store: VoiceStore, cache: SpeakerCache) -> None:
        self.engine = engine
        self.store = store
        self.cache = cache

    async def resolve(self, speaker_id: str) -> VoiceLatents:
        """Latents on the model's device for a saved voice or, failing that, a built-in speaker."""
        builtin = self.engine.builtin_speakers.get(speaker_id)
        try:
            check_voice_id(speaker_id)
        except InvalidVoiceId:
            # Not a possible saved-voice id (built-in names have spaces): only a built-in can match.
            if builtin is None:
                raise VoiceNotFound(f"no saved voice or built-in speaker {speaker_id!r}", voice_id=speaker_id) from None
            return builtin
        if builtin is not None and not await anyio.to_thread.run_sync(self.store.exists, speaker_id):
            return builtin
        try:
            return await self.cache.get_or_load(speaker_id, lambda: self._load_to_device(speaker_id))
        except VoiceNotFound:
            if builtin is not None:
                return builtin
            raise VoiceNotFound(f"no saved voice or built-in speaker {speaker_id!r}", voice_id=speaker_id) from None

    async def _load_to_device(self, voice_id: str) -> VoiceLatents:
        _record, latents = await anyio.to_thread.run_sync(self.store.load, voice_id)
        return latents.to(self.engine.device)

    async def save(
        self, voice_id: str, latents: VoiceLatents, name: str, description: str, overwrite: bool
    ) -> VoiceRecord:
        check_voice_id(voice_id)
        record = await anyio.to_thread.run_sync(
            lambda: self.store.save(voice_id, latents, name, description, overwrite)
        )
        self.cache.invalidate(voice_id)
        return record

    async def get(self, voice_id: str) -> SavedVoice:
        check_voice_id(voice_id)
        record, latents = await anyio.to_thread.run_sync(self.store.load, voice_id)
        return SavedVoice(record, latents)

    async def records(self) -> list[VoiceRecord]:
        return await anyio.to_thread.run_sync(self.store.records)

    async def delete(self, voice_id: str) -> None:
        check_voice_id(voice_id)
        await anyio.to_thread.run_sync(self.store.delete, voice_id)
        self.cache.invalidate(voice_id)

    async def clone(self, uploads: list[tuple[str, bytes]], settings: CloneSettings) -> VoiceLatents:
        """Latents from (filename, bytes) reference clips; the same clips and settings are computed once."""
        digest = hashlib.sha256(repr(sorted(asdict(settings).items())).encode())
        for _name, data in uploads:
            digest.update(hashlib.sha256(data).digest())

        async def compute() -> VoiceLatents:
            clips = []
            for name, data in uploads:
                samples = await anyio.to_thread.run_sync(decode_reference, data, name, settings.max_ref_length)
                check_usable(samples, name)
                clips.append(samples)
            return await self.engine.run(compute_voice_latents, self.engine.model, clips, settings)

        return await self.cache.get_or_load(f"clone:{digest.hexdigest()}", compute)

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
