"""The other replicas of this server, when it runs as one of several (see cluster/).

A stream lives in the process that generates it, but a client's /stream_status or /stream_cancel may reach
any replica. `SessionDirectory` answers from this process's registry first and asks the peers only when
the session is not here. A server on its own has no peers (`NO_PEERS`); the cluster package provides
peers that reach the other replicas through Ray and answer their questions with `LocalAnswers`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from services.errors import SessionConflict, SessionNotFound
from services.sessions import SessionRegistry, StreamSession, StreamState

if TYPE_CHECKING:
    from services.jobs.speaker import LocalSpeaker, SentenceSpeaker

Question = Literal["session", "cancel", "metrics"]


class Peers(Protocol):
    """How this replica reaches the others."""

    replica: str | None
    """This replica's name (in /health, session status and metric labels); None for a server on its own."""

    async def start(self, answers: LocalAnswers) -> None:
        """Begin answering the peers' questions (the app's lifespan calls this once the services exist)."""
        ...

    async def stop(self) -> None: ...

    async def ask(self, question: Question, args: tuple[object, ...]) -> list[object]:
        """Every other live replica's answer (those that do not answer in time are left out)."""
        ...

    def job_speaker(self, local: LocalSpeaker) -> SentenceSpeaker:
        """Who speaks this replica's job sentences: `local` (this engine) on its own; in a cluster, any replica
        (and `local` then speaks the sentences other replicas send here)."""
        ...


class _NoPeers:
    replica: str | None = None

    async def start(self, answers: LocalAnswers) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ask(self, question: Question, args: tuple[object, ...]) -> list[object]:
        return []

    def job_speaker(self, local: LocalSpeaker) -> SentenceSpeaker:
        return local


NO_PEERS: Peers = _NoPeers()


class LocalAnswers:
    """This replica's answers to its peers' questions, from the registry and metrics it owns."""

    def __init__(self, sessions: SessionRegistry, render_metrics: Callable[[], bytes]) -> None:
        self._sessions = sessions
        self._render_metrics = render_metrics

    def answer(self, question: Question, args: Sequence[object]) -> object:
        """Plain values (the answer crosses processes, and the exchange between them imports none of our
        classes): ("found", the session as a dict), ("finished-already", state) for a cancel that came too
        late, None when the session is not here; metrics as text."""
        if question == "metrics":
            return self._render_metrics().decode()
        session_id, owner, admin = str(args[0]), args[1], bool(args[2])
        owner = None if owner is None else str(owner)
        try:
            session = self._sessions.get(session_id, owner, admin)
        except SessionNotFound:
            return None
        if question == "cancel":
            if session.finished:
                return ("finished-already", session.state.value)
            self._sessions.cancel(session_id, str(args[3]), owner, admin)
        return ("found", _plain(session))


class SessionDirectory:
    """Sessions wherever they run: this process's registry first, then the peers."""

    def __init__(self, sessions: SessionRegistry, peers: Peers = NO_PEERS) -> None:
        self._sessions = sessions
        self._peers = peers

    async def get(self, session_id: str, owner: str | None, admin: bool) -> StreamSession:
        try:
            return self._sessions.get(session_id, owner, admin)
        except SessionNotFound:
            return _found(session_id, await self._peers.ask("session", (session_id, owner, admin)))

    async def cancel(self, session_id: str, reason: str, owner: str | None, admin: bool) -> StreamSession:
        """Cancel here or on the replica that runs it (it stops within one model chunk there)."""
        try:
            return self._sessions.cancel(session_id, reason, owner, admin)
        except SessionNotFound:
            answers = await self._peers.ask("cancel", (session_id, owner, admin, reason))
        for answer in answers:
            if isinstance(answer, tuple) and answer[0] == "finished-already":
                raise SessionConflict(
                    f"session {session_id!r} has already finished ({answer[1]})", state=str(answer[1])
                )
        return _found(session_id, answers)

    async def ensure_unused_elsewhere(self, session_id: str, owner: str | None) -> None:
        """409 if another replica holds (or has just finished) this key's session with this id; this process's
        registry checks its own as the stream registers. Two replicas claiming one id at the same instant can
        both win: ids a client chooses should be unique anyway (the server's own are random)."""
        if _found_or_none(await self._peers.ask("session", (session_id, owner, False))) is not None:
            raise SessionConflict(f"session id {session_id!r} is already in use", session_id=session_id)


def _plain(session: StreamSession) -> dict[str, object]:
    return {**dataclasses.asdict(session), "state": session.state.value}


def _found(session_id: str, answers: list[object]) -> StreamSession:
    session = _found_or_none(answers)
    if session is None:
        raise SessionNotFound(f"no stream session {session_id!r}", session_id=session_id)
    return session


def _found_or_none(answers: list[object]) -> StreamSession | None:
    for answer in answers:
        if isinstance(answer, tuple) and answer[0] == "found" and isinstance(answer[1], dict):
            fields = answer[1]
            return StreamSession(**{**fields, "state": StreamState(fields["state"])})
    return None
