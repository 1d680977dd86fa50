"""Stream sessions: the records /stream_status reports, and the live streams /stream_cancel reaches."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cachetools import TTLCache

from services.errors import SessionConflict, SessionNotFound

logger = logging.getLogger("xtts_server.requests")


def log_session(session: StreamSession) -> None:
    """One line per request: who, what, how fast, how it ended."""
    ttfa = f"{session.first_audio_at - session.created_at:.3f}s" if session.first_audio_at else "-"
    logger.info(
        "session=%s voice=%s language=%s chars=%d ttfa=%s audio=%.2fs bytes=%d outcome=%s%s",
        session.id, session.voice, session.language, session.characters, ttfa, session.audio_seconds,
        session.bytes_sent, session.state.value, f" error={session.error!r}" if session.error else "",
    )  # fmt: skip


class StreamState(StrEnum):
    """Where a stream is in its life."""

    QUEUED = "queued"
    GENERATING = "generating"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINISHED_STATES = {StreamState.COMPLETED, StreamState.CANCELLED, StreamState.FAILED}


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass
class StreamSession:
    """One speech request's progress record; written by its stream, on the event loop only."""

    id: str
    voice: str
    language: str
    characters: int
    chunks_total: int = 0
    created_at: float = field(default_factory=time.time)
    state: StreamState = StreamState.QUEUED
    chunks_done: int = 0
    audio_seconds: float = 0.0
    bytes_sent: int = 0
    started_at: float | None = None
    first_audio_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def add_timing(self, stage: str, seconds: float) -> None:
        self.timings_s[stage] = self.timings_s.get(stage, 0.0) + seconds


class LiveStream(Protocol):
    """What the registry needs of a running stream (services.speech_stream.SpeechStream)."""

    session: StreamSession

    def cancel(self, reason: str) -> None: ...


class SessionRegistry:
    """Live streams by session id, and finished sessions for a while (bounded in count and age)."""

    def __init__(
        self,
        history_size: int,
        history_ttl_s: float,
        on_finish: list[Callable[[StreamSession], None]] | None = None,
    ) -> None:
        self._on_finish = on_finish or []
        self._live: dict[str, LiveStream] = {}
        self._finished: TTLCache[str, StreamSession] = TTLCache(maxsize=history_size, ttl=history_ttl_s)

    def register(self, stream: LiveStream) -> None:
        """Track a new stream; a session id already in use (live or in the history) is a conflict."""
        session_id = stream.session.id
        if session_id in self._live or session_id in self._finished:
            raise SessionConflict(f"session id {session_id!r} is already in use", session_id=session_id)
        self._live[session_id] = stream

    def get(self, session_id: str) -> StreamSession:
        live = self._live.get(session_id)
        session = live.session if live is not None else self._finished.get(session_id)
        if session is None:
            raise SessionNotFound(f"no stream session {session_id!r}", session_id=session_id)
        return session

    def cancel(self, session_id: str, reason: str) -> StreamSession:
        """Ask a live stream to stop (it ends within one model chunk); a finished one is a conflict."""
        live = self._live.get(session_id)
        if live is None:
            session = self.get(session_id)  # 404 if unknown
            raise SessionConflict(
                f"session {session_id!r} has already finished ({session.state.value})", state=session.state.value
            )
        live.cancel(reason)
        return live.session

    def finish(self, session: StreamSession, state: StreamState, error: str | None = None) -> None:
        """Record the outcome (the stream calls this once) and move the session to the history."""
        if session.finished:
            return
        session.state = state
        session.error = error
        session.finished_at = time.time()
        self._live.pop(session.id, None)
        self._finished[session.id] = session
        for listener in self._on_finish:
            listener(session)

    def live(self) -> list[LiveStream]:
        return list(self._live.values())
