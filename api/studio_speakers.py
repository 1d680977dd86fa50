"""coqui's /studio_speakers answer with saved voices too (Pipecat's XTTSService picks its voice from it): the
built-in speakers' JSON is made once at load; each saved voice's entry is made once per file version and kept
until that voice changes or goes, so a call costs a folder listing, not a re-encoding of every voice's latents."""

from __future__ import annotations

import json
import weakref

import anyio

from services.voice_store import VoiceRecord
from services.voices import VoiceService

_Version = tuple[str, str, int]
# per voice service (one per loaded model): voice id -> (its file's version, its JSON entry)
_ENTRIES: weakref.WeakKeyDictionary[VoiceService, dict[str, tuple[_Version, bytes]]] = weakref.WeakKeyDictionary()


async def studio_speakers_json(voices: VoiceService, builtin_json: bytes) -> bytes:
    """`{name: {"speaker_embedding", "gpt_cond_latent"}}`: built-in speakers, then saved voices (which win over a
    built-in speaker of the same name, as everywhere else)."""
    records = await voices.records()
    entries = _ENTRIES.setdefault(voices, {})
    for gone in set(entries) - {record.voice_id for record in records}:
        del entries[gone]
    parts = []
    for record in records:
        version = _version(record)
        cached = entries.get(record.voice_id)
        if cached is None or cached[0] != version:
            saved = await voices.get(record.voice_id)
            entry = await anyio.to_thread.run_sync(json.dumps, saved.latents.as_lists())
            cached = entries[record.voice_id] = (version, json.dumps(record.voice_id).encode() + b":" + entry.encode())
        parts.append(cached[1])
    if not parts:
        return builtin_json
    builtin = builtin_json.strip()[1:-1].strip()
    if shadowed := {record.voice_id for record in records} & set(voices.engine.builtin_speakers):
        kept = {name: value for name, value in json.loads(builtin_json).items() if name not in shadowed}
        builtin = json.dumps(kept).encode()[1:-1]  # rare (a voice saved under a built-in's name): made per call
    return b"{" + b",".join([builtin, *parts] if builtin else parts) + b"}"


def _version(record: VoiceRecord) -> _Version:
    return record.voice_id, record.created_at, record.size_bytes
