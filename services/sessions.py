"""Stream sessions: the records /stream_status reports, and the live streams /stream_cancel reaches."""

from __future__ import annotations

import asyncio
import contextlib
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

SHUTTING_DOWN = "server shutting down"
"""The cancel reason of every stream that a shutdown cut off (HTTP or socket): its session's recorded error."""


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
    owner: str | None = None
    """The API key (its id, never the key) that started it; None when keys are off."""
    replica: str | None = None
    """The replica that runs it, when the server runs as several (cluster/)."""
    family: str = "http"
    """The API that started it: `http`, `websocket` (/v1/tts/ws) or `wyoming` (Home Assistant's protocol)."""

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
        replica: str | None = None,
    ) -> None:
        self._on_finish = on_finish or []
        self._replica = replica
        self._none_live = asyncio.Event()
        # Keyed by (owner, id): with API keys on, each key has its own session ids, so nobody can squat
        # or guess their way into another key's session.
        self._live: dict[tuple[str | None, str], LiveStream] = {}
        self._finished: TTLCache[tuple[str | None, str], StreamSession] = TTLCache(
            maxsize=history_size, ttl=history_ttl_s
        )

    def register(self, stream: LiveStream) -> None:
        """Track a new stream; a session id its owner already uses (live or in the history) is a conflict."""
        key = (stream.session.owner, stream.session.id)
        if key in self._live or key in self._finished:
            raise SessionConflict(f"session id {key[1]!r} is already in use", session_id=key[1])
        stream.session.replica = self._replica
        self._live[key] = stream
        self._none_live.clear()

    def get(self, session_id: str, owner: str | None = None, admin: bool = True) -> StreamSession:
        """The caller's session; an admin may read anyone's. Others' sessions are as unknown as missing ones."""
        key = self._key(session_id, owner, admin)
        live = self._live.get(key)
        session = live.session if live is not None else self._finished.get(key)
        if session is None:
            raise SessionNotFound(f"no stream session {session_id!r}", session_id=session_id)
        return session

    def cancel(self, session_id: str, reason: str, owner: str | None = None, admin: bool = True) -> StreamSession:
        """Ask a live stream to stop (it ends within one model chunk); a finished one is a conflict."""
        live = self._live.get(self._key(session_id, owner, admin))
        if live is None:
            session = self.get(session_id, owner, admin)  # 404 if unknown (or not the caller's)
            raise SessionConflict(
                f"session {session_id!r} has already finished ({session.state.value})", state=session.state.value
            )
        live.cancel(reason)
        return live.session

    def _key(self, session_id: str, owner: str | None, admin: bool) -> tuple[str | None, str]:
        key = (owner, session_id)
        if admin and key not in self._live and key not in self._finished:
            for other in (*self._live, *self._finished):
                if other[1] == session_id:
                    return other
        return key

    def finish(self, session: StreamSession, state: StreamState, error: str | None = None) -> None:
        """Record the outcome (the stream calls this once) and move the session to the history."""
        if session.finished:
            return
        session.state = state
        session.error = error
        session.finished_at = time.time()
        self._live.pop((session.owner, session.id), None)
        self._finished[(session.owner, session.id)] = session
        if not self._live:
            self._none_live.set()
        for listener in self._on_finish:
            listener(session)

    def live(self) -> list[LiveStream]:
        return list(self._live.values())

    async def wait_all_finished(self, timeout_s: float) -> bool:
        """Wait (bounded) until every live stream has recorded its outcome; False if some had not."""
        if self._live:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_live.wait(), timeout_s)
        return not self._live
