"""The session registry: ids, lookups, cancels reaching live streams, and the bounded history."""

from __future__ import annotations

import time

import pytest

from services.errors import SessionConflict, SessionNotFound
from services.sessions import SessionRegistry, StreamSession, StreamState


class Live:
    """What the registry holds of a running stream."""

    def __init__(self, session_id: str) -> None:
        self.session = StreamSession(id=session_id, voice="v", language="en", characters=3)
        self.reasons: list[str] = []

    def cancel(self, reason: str) -> None:
        self.reasons.append(reason)


def test_live_and_finished_sessions_are_found_and_unknown_ones_are_404() -> None:
    heard: list[StreamSession] = []
    registry = SessionRegistry(10, 60, on_finish=[heard.append])
    live = Live("a")
    registry.register(live)
    assert registry.get("a") is live.session and registry.live() == [live]
    registry.finish(live.session, StreamState.COMPLETED)
    registry.finish(live.session, StreamState.FAILED, "late")  # the first outcome stands
    assert registry.get("a").state == StreamState.COMPLETED and registry.get("a").error is None
    assert registry.live() == [] and heard == [live.session]
    with pytest.raises(SessionNotFound):
        registry.get("nope")


def test_a_taken_id_is_a_conflict_live_or_finished() -> None:
    registry = SessionRegistry(10, 60)
    first = Live("same")
    registry.register(first)
    with pytest.raises(SessionConflict):
        registry.register(Live("same"))
    registry.finish(first.session, StreamState.CANCELLED, "gone")
    with pytest.raises(SessionConflict):
        registry.register(Live("same"))


def test_cancel_reaches_the_live_stream_and_a_finished_one_is_a_conflict() -> None:
    registry = SessionRegistry(10, 60)
    live = Live("c")
    registry.register(live)
    assert registry.cancel("c", "cancelled by request") is live.session
    assert live.reasons == ["cancelled by request"]
    registry.finish(live.session, StreamState.CANCELLED, "cancelled by request")
    with pytest.raises(SessionConflict, match="already finished"):
        registry.cancel("c", "again")
    with pytest.raises(SessionNotFound):
        registry.cancel("unknown", "x")


def test_the_history_is_bounded_in_count_and_age() -> None:
    registry = SessionRegistry(history_size=2, history_ttl_s=0.05)
    for name in ("one", "two", "three"):
        live = Live(name)
        registry.register(live)
        registry.finish(live.session, StreamState.COMPLETED)
    with pytest.raises(SessionNotFound):
        registry.get("one")  # pushed out by count
    assert registry.get("three").state == StreamState.COMPLETED
    time.sleep(0.1)
    with pytest.raises(SessionNotFound):
        registry.get("three")  # expired
