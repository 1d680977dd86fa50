"""Voice endpoints: cloning, saved voices and the latent cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from api.deps import CacheDep, CallerDep, VoicesDep, require_admin
from api.disconnect import until_disconnected
from api.errors import ERROR_RESPONSES
from models.inputs import CloneOptions, SaveVoiceRequest
from services.engine.cloning import CloneSettings
from services.errors import InvalidInput
from services.ids import ID_PATTERN
from services.voice_store import VoiceRecord

router = APIRouter(tags=["voices"], responses=ERROR_RESPONSES)

VoiceId = Annotated[str, Path(pattern=ID_PATTERN, description="A saved voice's id.")]


class Latents(BaseModel):
    gpt_cond_latent: list[list[float]] = Field(description="N x 1024 floats (N = 32 from cloning).")
    speaker_embedding: list[float] = Field(description="512 floats.")


class SavedVoiceOut(BaseModel):
    voice_id: str
    name: str
    description: str
    created_at: str
    size_bytes: int


class SavedVoiceWithLatents(SavedVoiceOut, Latents):
    pass


class CacheStatsOut(BaseModel):
    size: int
    max_size: int
    ttl_s: float
    hits: int
    misses: int
    evictions: int
    hit_rate: float


def _out(record: VoiceRecord) -> SavedVoiceOut:
    return SavedVoiceOut(**record.__dict__)


def _parse_options(raw: str | None) -> CloneOptions:
    try:
        return CloneOptions.model_validate_json(raw or "{}")
    except ValidationError as error:
        raise RequestValidationError(
            [{**problem, "loc": ("body", "options", *problem["loc"])} for problem in error.errors()]
        ) from None


@router.post(
    "/clone_speaker",
    response_model=Latents | SavedVoiceOut,
    responses={
        413: {"description": "Upload over MAX_UPLOAD_MB."},
        415: {"description": "Not audio."},
        **ERROR_RESPONSES,
    },
)
async def clone_speaker(
    request: Request,
    voices: VoicesDep,
    caller: CallerDep,
    wav_file: Annotated[
        list[UploadFile] | None,
        Form(description="Reference clips (WAV, FLAC, MP3, OGG/Opus, M4A, WebM); several make one voice."),
    ] = None,
    options: Annotated[
        str | None,
        Form(description='JSON, e.g. {"response_format": "save", "save_id": "my-voice", "name": "My voice"}'),
    ] = None,
    audio_file_path: Annotated[
        list[str] | None,
        Form(description="Instead of wav_file: clips on the server, read only inside REFERENCE_AUDIO_DIR (else 403)."),
    ] = None,
) -> Latents | SavedVoiceOut:
    """Clone a voice from reference audio: return its latents (coqui's form) or save it."""
    settings = _parse_options(options)
    if settings.overwrite:
        require_admin(caller, "overwriting a saved voice")
    if not wav_file and not audio_file_path:
        raise RequestValidationError([{"type": "missing", "loc": ("body", "wav_file"), "msg": "Field required"}])
    if wav_file and audio_file_path:
        raise InvalidInput("send wav_file or audio_file_path, not both")
    clone_settings = CloneSettings(
        gpt_cond_len=settings.gpt_cond_len,
        gpt_cond_chunk_len=settings.gpt_cond_chunk_len,
        max_ref_length=settings.max_ref_length,
        sound_norm_refs=settings.sound_norm_refs,
        librosa_trim_db=settings.librosa_trim_db,
    )
    if audio_file_path:
        cloning = voices.clone_files(audio_file_path, clone_settings)
    else:
        assert wav_file is not None
        uploads = [(upload.filename or f"file{index}", await upload.read()) for index, upload in enumerate(wav_file)]
        cloning = voices.clone(uploads, clone_settings)
    # a client that leaves stops the clone between its steps, queued or not
    latents = await until_disconnected(request, cloning, on_disconnect=lambda: None)
    if settings.response_format == "latents":
        return Latents(**latents.as_lists())
    assert settings.save_id is not None
    record = await voices.save(
        settings.save_id, latents, settings.name or settings.save_id, settings.description, settings.overwrite
    )
    return _out(record)


@router.post("/save_voice/{voice_id}", response_model=SavedVoiceOut, status_code=201, responses=ERROR_RESPONSES)
async def save_voice(voice_id: VoiceId, body: SaveVoiceRequest, voices: VoicesDep, caller: CallerDep) -> SavedVoiceOut:
    """Save latents under an id; 409 if it exists unless `overwrite` is true (an admin's action with keys on)."""
    if body.overwrite:
        require_admin(caller, "overwriting a saved voice")
    record = await voices.save_latents(
        voice_id, body.gpt_cond_latent, body.speaker_embedding, body.name or voice_id, body.description, body.overwrite
    )
    return _out(record)


@router.get("/saved_voices", response_model=list[SavedVoiceOut])
async def saved_voices(voices: VoicesDep) -> list[SavedVoiceOut]:
    """Every saved voice, oldest first."""
    return [_out(record) for record in await voices.records()]


@router.get("/saved_voices/{voice_id}", response_model=SavedVoiceWithLatents, responses=ERROR_RESPONSES)
async def saved_voice(voice_id: VoiceId, voices: VoicesDep) -> SavedVoiceWithLatents:
    """One saved voice with its latents."""
    saved = await voices.get(voice_id)
    return SavedVoiceWithLatents(**saved.record.__dict__, **saved.latents.as_lists())


@router.delete("/saved_voices/{voice_id}", responses=ERROR_RESPONSES)
async def delete_voice(voice_id: VoiceId, voices: VoicesDep, caller: CallerDep) -> dict[str, str]:
    """Delete a saved voice (and drop it from the cache); an admin's action with keys on."""
    require_admin(caller, "deleting a saved voice")
    await voices.delete(voice_id)
    return {"deleted": voice_id}


@router.get("/cache/stats", response_model=CacheStatsOut, tags=["cache"])
async def cache_stats(cache: CacheDep) -> CacheStatsOut:
    stats = cache.stats()
    return CacheStatsOut(**stats.__dict__, hit_rate=round(stats.hit_rate, 4))


@router.post("/cache/clear", tags=["cache"])
async def cache_clear(cache: CacheDep, caller: CallerDep) -> dict[str, int]:
    """Empty the latent cache; an admin's action with keys on."""
    require_admin(caller, "clearing the cache")
    return {"cleared": cache.clear()}
