"""The conversation service without a socket: a fake send collects what a client would get, the real speech
service over the fake engine speaks (admission, sessions and their ids as in the app)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.admission import AdmissionGate
from services.cache import SpeakerCache
from services.conversation import CLEARED, Conversation, ConversationConfig, ConversationLimits
from services.errors import InvalidInput, NotReady, ServiceError
from services.segments import Event
from services.sessions import SHUTTING_DOWN, SessionRegistry, StreamSession, StreamState
from services.speech import SpeechLimits, SpeechOptions, SpeechService
from services.voice_store import VoiceStore
from services.voices import VoiceService
from tests.fakes import FakeEngine

Sent = Event | bytes | ServiceError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Client:
    """What a conversation sends, in order, and a way to wait for an event."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self._changed = asyncio.Event()

    async def send(self, item: Sent) -> None:
        self.sent.append(item)
        self._changed.set()

    def events(self, kind: str | None = None) -> list[Event]:
        return [item for item in self.sent if isinstance(item, dict) and kind in (None, item["type"])]

    def errors(self) -> list[ServiceError]:
        return [item for item in self.sent if isinstance(item, ServiceError)]

    def audio_of(self, session_id: str) -> bytes:
        audio, current = b"", None
        for item in self.sent:
            if isinstance(item, dict) and item["type"] == "audio_start":
                current = item["session_id"]
            elif isinstance(item, bytes) and current == session_id:
                audio += item
        return audio

    async def wait_for(self, kind: str, count: int = 1, timeout_s: float = 10) -> list[Event]:
        async with asyncio.timeout(timeout_s):
            while len(self.events(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.events(kind)


class Harness:
    """A conversation over the real speech service, admission gate and session registry, with the fake engine."""

    def __init__(self, tmp_path: Path, slots: int = 4, seed: int | None = 7, **engine_options: Any) -> None:
        self.engine = FakeEngine(**engine_options)
        self.gate = AdmissionGate(slots, 8, queue_timeout_s=5)
        self.finished: list[StreamSession] = []
        self.sessions = SessionRegistry(100, 60, on_finish=[self.finished.append])
        voices = VoiceService(self.engine, VoiceStore(tmp_path, 1024, 512), SpeakerCache(10, 60))
        limits = SpeechLimits(max_text_length=500, first_chunk_tokens=1)
        self.speech = SpeechService(self.engine, voices, self.sessions, self.gate, limits)
        self.client = Client()
        self.clock = Clock()
        self.conversation = Conversation(
            "c0nv",
            self.speech,
            ConversationConfig("en", "Dummy Alto", SpeechOptions(seed=seed)),
            ConversationLimits(max_text_length=400, max_wait_s=1.5),
            self.client.send,
            clock=self.clock,
        )

    def outcome(self, session_id: str) -> tuple[StreamState, str | None]:
        session = next(session for session in self.finished if session.id == session_id)
        return session.state, session.error


async def look_ahead_opened(conversation: Conversation, generating: bool = False) -> None:
    """Until the segment generating ahead is a session (its opening takes a moment), or has made its first chunk."""

    def opened() -> bool:
        upcoming = conversation.next_up
        if upcoming is None:
            return False
        return upcoming.first_chunk is not None if generating else upcoming.stream is not None

    async with asyncio.timeout(10):
        while not opened():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def run(tmp_path: Path, test: Callable[[Harness], Awaitable[None]], **options: Any) -> Harness:
    harness = Harness(tmp_path, **options)

    async def main() -> None:
        conversation = harness.conversation
        speaking = asyncio.create_task(conversation.run())
        try:
            await test(harness)
        finally:
            await conversation.stop("test over")
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)

    asyncio.run(asyncio.wait_for(main(), timeout=30))
    harness.engine.shutdown()
    return harness


def test_a_context_speaks_turn_after_turn_each_segment_a_session_of_its_own(tmp_path: Path) -> None:
    async def turns(harness: Harness) -> None:
        conversation, client = harness.conversation, harness.client
        for turn in range(3):
            conversation.text("Hello there. How are you?", "default")
            conversation.flush("default")
            await client.wait_for("done", count=turn + 1)

    harness = run(tmp_path, turns)
    client = harness.client
    assert client.errors() == []
    starts = client.events("audio_start")
    assert [start["segment"] for start in starts] == [0, 1] * 3  # a turn's segments count from 0
    session_ids = [str(start["session_id"]) for start in starts]
    assert session_ids == [f"c0nv-{n}" for n in range(6)]  # ids never repeat
    assert all(client.audio_of(session_id) for session_id in session_ids)  # every turn is heard
    assert all(harness.outcome(session_id)[0] is StreamState.COMPLETED for session_id in session_ids)
    assert [event["context_id"] for event in client.events("done")] == ["default"] * 3
    # each turn sounds as /tts_stream with the config's seed: segment n gets seed + n, every turn again
    assert [start["offset_s"] for start in starts[:2]] == [start["offset_s"] for start in starts[2:4]]
    assert client.audio_of("c0nv-0") == client.audio_of("c0nv-2") and client.audio_of("c0nv-1") == client.audio_of(
        "c0nv-3"
    )
    assert harness.gate.in_flight == 0


def test_a_cleared_context_speaks_again(tmp_path: Path) -> None:
    long_text = " ".join(f"Sentence number {index} of a long answer." for index in range(8))

    async def clear_then_speak(harness: Harness) -> None:
        conversation, client = harness.conversation, harness.client
        conversation.text(long_text, "a1")
        await client.wait_for("audio_start")
        await look_ahead_opened(conversation, generating=True)
        await conversation.clear("a1")
        conversation.text("Once more.", "a1")
        conversation.flush("a1")
        await client.wait_for("done")
        assert harness.gate.in_flight == 0  # the look-ahead gave its slot back, unheard

    harness = run(tmp_path, clear_then_speak, chunks_per_sentence=6, chunk_delay_s=0.02)
    client = harness.client
    assert client.errors() == []
    events = [event["type"] for event in client.events() if event["type"] != "audio_start"]
    assert sorted(events[:2]) == ["audio_end", "cleared"] and events[2:] == ["audio_end", "done"]
    first, again = client.events("audio_start")
    assert client.events("audio_end")[0].get("interrupted") is True
    assert again["text"] == "Once more." and again["segment"] == 0 and again["session_id"] != first["session_id"]
    assert client.audio_of(str(again["session_id"]))
    assert harness.outcome(str(first["session_id"])) == (StreamState.CANCELLED, CLEARED)
    look_ahead = [(session.state, session.error) for session in harness.finished if session.id == "c0nv-1"]
    assert look_ahead in ([], [(StreamState.CANCELLED, CLEARED)])  # it never played (or even opened, under load)
    assert harness.gate.in_flight == 0


def test_contexts_speak_in_the_order_they_arrived_and_the_next_segment_generates_while_one_plays(
    tmp_path: Path,
) -> None:
    async def two_contexts(harness: Harness) -> None:
        conversation, client = harness.conversation, harness.client
        conversation.text("First answer, one. First answer, two.", "first")
        conversation.text("Second answer.", "second")
        conversation.flush("second")
        await client.wait_for("audio_start")
        conversation.flush("first")
        await client.wait_for("done", count=2)

    harness = run(tmp_path, two_contexts, chunks_per_sentence=4, chunk_delay_s=0.02)
    client = harness.client
    assert [(event["context_id"], event["segment"]) for event in client.events("audio_start")] == [
        ("first", 0), ("first", 1), ("second", 0),
    ]  # fmt: skip
    assert [event["context_id"] for event in client.events("done")] == ["first", "second"]
    # the look-ahead: segment 1 was generating (its first chunk made) while segment 0 played
    sessions = {session.id: session for session in harness.finished}
    made_ahead = sessions["c0nv-1"].first_audio_at
    assert made_ahead is not None and made_ahead < (sessions["c0nv-0"].finished_at or 0)


def test_text_without_punctuation_is_spoken_once_it_has_waited_max_wait(tmp_path: Path) -> None:
    async def unpunctuated(harness: Harness) -> None:
        conversation, client = harness.conversation, harness.client
        conversation.text("no punctuation here", "default")
        await asyncio.sleep(0.3)  # the conversation's clock has not moved: nothing is due
        assert client.events("audio_start") == []
        harness.clock.now += 1.5
        await client.wait_for("audio_start")

    harness = run(tmp_path, unpunctuated)
    assert harness.client.events("audio_start")[0]["text"] == "no punctuation here"


def test_too_long_text_is_refused_and_the_conversation_goes_on(tmp_path: Path) -> None:
    async def too_long(harness: Harness) -> None:
        with pytest.raises(InvalidInput, match="MAX_TEXT_LENGTH"):
            harness.conversation.text("x" * 401, "default")
        harness.conversation.text("Fine.", "default")
        harness.conversation.close()
        await harness.client.wait_for("done")

    run(tmp_path, too_long)


def test_a_drain_lets_the_segment_playing_finish_and_starts_nothing_new(tmp_path: Path) -> None:
    text = "The segment playing. The one generating ahead. A third one."

    async def drain(harness: Harness) -> None:
        conversation, client = harness.conversation, harness.client
        conversation.text(text, "default")
        await client.wait_for("audio_start")
        await look_ahead_opened(conversation)
        conversation.drain(grace_s=30)
        with pytest.raises(NotReady):
            conversation.text("Too late.", "default")
        await client.wait_for("audio_end")
        for _ in range(50):  # run() returns once the segment playing has ended
            if not conversation.busy and conversation.next_up is None:
                break
            await asyncio.sleep(0.02)

    harness = run(tmp_path, drain, chunks_per_sentence=6, chunk_delay_s=0.02)
    client = harness.client
    assert [event["text"] for event in client.events("audio_start")] == ["The segment playing."]
    assert "interrupted" not in client.events("audio_end")[0] and client.events("done") == []
    assert harness.outcome("c0nv-0") == (StreamState.COMPLETED, None)
    assert harness.outcome("c0nv-1") == (StreamState.CANCELLED, SHUTTING_DOWN)  # the look-ahead
    assert harness.gate.in_flight == 0


def test_a_drain_cuts_off_the_segment_playing_when_its_grace_runs_out(tmp_path: Path) -> None:
    async def drain(harness: Harness) -> None:
        conversation, client = harness.conversation, harness.client
        conversation.text("A long segment that cannot finish in its grace.", "default")
        await client.wait_for("audio_start")
        conversation.drain(grace_s=0.2)
        await client.wait_for("audio_end")

    harness = run(tmp_path, drain, chunks_per_sentence=100, chunk_delay_s=0.02)
    assert harness.client.events("audio_end")[0].get("interrupted") is True
    assert harness.outcome("c0nv-0") == (StreamState.CANCELLED, SHUTTING_DOWN)


def test_stop_gives_back_every_slot_and_records_why(tmp_path: Path) -> None:
    async def leave(harness: Harness) -> None:
        harness.conversation.text("One sentence. And another one.", "default")
        await harness.client.wait_for("audio_start")
        await harness.conversation.stop("client disconnected")
        assert harness.gate.in_flight == 0

    harness = run(tmp_path, leave, chunks_per_sentence=50, chunk_delay_s=0.02)
    assert {(session.state, session.error) for session in harness.finished} == {
        (StreamState.CANCELLED, "client disconnected")
    }
    assert len(harness.finished) == 2
