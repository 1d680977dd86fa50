"""Stream sessions: progress and cancellation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.deps import CallerDep, SessionsDep
from api.errors import ERROR_RESPONSES
from services.ids import ID_PATTERN
from services.sessions import StreamSession, StreamState

router = APIRouter(tags=["sessions"], responses=ERROR_RESPONSES)

SessionId = Annotated[str, Path(pattern=ID_PATTERN, description="The X-Session-ID of a stream.")]


class SessionStatus(BaseModel):
    session_id: str
    state: StreamState
    voice: str
    language: str
    characters: int
    chunks_done: int = Field(description="Text chunks (sentences) fully spoken.")
    chunks_total: int
    audio_seconds: float = Field(description="Seconds of audio generated so far.")
    bytes_sent: int
    created_at: float = Field(description="Unix time.")
    started_at: float | None = Field(description="When it left the queue.")
    first_audio_at: float | None
    finished_at: float | None
    time_to_first_audio_s: float | None
    error: str | None
    replica: str | None = Field(description="The replica that runs it, when the server runs as several.")
    timings_s: dict[str, float] = Field(
        description="Seconds per stage: queue, latents, prefill, gpt_steps, vocoder, encode, send."
    )


def _status(session: StreamSession) -> SessionStatus:
    return SessionStatus(
        session_id=session.id,
        state=session.state,
        voice=session.voice,
        language=session.language,
        characters=session.characters,
        chunks_done=session.chunks_done,
        chunks_total=session.chunks_total,
        audio_seconds=round(session.audio_seconds, 3),
        bytes_sent=session.bytes_sent,
        created_at=session.created_at,
        started_at=session.started_at,
        first_audio_at=session.first_audio_at,
        finished_at=session.finished_at,
        time_to_first_audio_s=(
            round(session.first_audio_at - session.created_at, 4) if session.first_audio_at else None
        ),
        error=session.error,
        replica=session.replica,
        timings_s={stage: round(seconds, 4) for stage, seconds in session.timings_s.items()},
    )


@router.get("/stream_status/{session_id}", response_model=SessionStatus, responses=ERROR_RESPONSES)
async def stream_status(sessions: SessionsDep, session_id: SessionId, caller: CallerDep) -> SessionStatus:
    """A stream's state and progress; finished sessions stay visible for SESSION_HISTORY_TTL seconds.
    With keys on, only the key that started it (or an admin) sees it; to others it is 404."""
    return _status(await sessions.get(session_id, caller.key_id, caller.admin))


@router.delete("/stream_cancel/{session_id}", response_model=SessionStatus, responses=ERROR_RESPONSES)
async def stream_cancel(sessions: SessionsDep, session_id: SessionId, caller: CallerDep) -> SessionStatus:
    """Stop a live stream within one model chunk; its HTTP response ends and its slot frees. 409 if finished.
    Works through any replica when the server runs as several. With keys on, only the key that started it
    (or an admin) may."""
    return _status(await sessions.cancel(session_id, "cancelled by request", caller.key_id, caller.admin))
