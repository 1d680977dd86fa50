"""The speech service and a stream's lifecycle, without HTTP: the fake engine stands in for the model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from api.disconnect import open_admitted
from api.errors import ClientDisconnected
from services.admission import AdmissionGate
from services.cache import SpeakerCache
from services.errors import InvalidInput, InvalidLatents, Overloaded, SessionConflict, UnsupportedLanguage
from services.sessions import SessionRegistry, StreamSession, StreamState
from services.speech import GivenLatents, SpeechJob, SpeechLimits, SpeechOptions, SpeechService
from services.voice_store import VoiceStore
from services.voices import VoiceService
from tests.fakes import FakeEngine

TWO_SENTENCES = "The first sentence. And the second one."


class Harness:
    """A speech service over the fake engine, with the gate and registry it shares with the app."""

    def __init__(self, tmp_path: Path, slots: int = 2, queue: int = 2, **engine_options: Any) -> None:
        self.engine = FakeEngine(**engine_options)
        self.gate = AdmissionGate(slots, queue, queue_timeout_s=5)
        self.finished: list[StreamSession] = []
        self.sessions = SessionRegistry(100, 60, on_finish=[self.finished.append])
        voices = VoiceService(self.engine, VoiceStore(tmp_path, 1024, 512), SpeakerCache(10, 60))
        limits = SpeechLimits(max_text_length=200, first_chunk_tokens=1)
        self.speech = SpeechService(self.engine, voices, self.sessions, self.gate, limits)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


def job(text: str = TWO_SENTENCES, **options: Any) -> SpeechJob:
    session_id = options.pop("session_id", None)
    return SpeechJob(text, "en", options.pop("voice", "Dummy Alto"), SpeechOptions(**options), session_id)


def test_a_whole_stream_completes_records_its_progress_and_gives_its_slot_back(tmp_path: Path) -> None:
    harness = Harness(tmp_path)

    async def main() -> None:
        stream = await harness.speech.open(job(seed=7))
        assert stream.session.state == StreamState.QUEUED and stream.seed == 7
        await stream.admit()
        assert harness.gate.in_flight == 1 and stream.session.state == StreamState.GENERATING
        async with stream:
            chunks = [chunk async for chunk in stream]
        session = stream.session
        assert len(chunks) == 2 * harness.engine.chunks_per_sentence
        assert session.state == StreamState.COMPLETED and session.error is None
        assert session.chunks_done == session.chunks_total == 2
        assert session.audio_seconds == pytest.approx(len(b"".join(chunks)) / 48000)
        assert session.first_audio_at is not None and session.finished_at is not None
        assert {"latents", "queue", "prefill", "gpt_steps", "vocoder", "encode"} <= set(session.timings_s)
        assert harness.gate.in_flight == 0
        assert harness.finished == [session]  # listeners (log line, metrics) hear of it once

    run(main)


def test_the_first_cancel_reason_is_the_one_recorded(tmp_path: Path) -> None:
    harness = Harness(tmp_path, chunk_delay_s=0.01)

    async def main() -> None:
        stream = await harness.speech.open(job())
        await stream.admit()
        async with stream:
            async for _chunk in stream:
                stream.cancel("cancelled by request")
                stream.cancel("client disconnected")
        assert stream.session.state == StreamState.CANCELLED
        assert stream.session.error == "cancelled by request"
        assert stream.session.chunks_done < stream.session.chunks_total
        assert harness.gate.in_flight == 0

    run(main)


def test_cancel_stops_generation_within_one_chunk(tmp_path: Path) -> None:
    harness = Harness(tmp_path, chunks_per_sentence=50, chunk_delay_s=0.005)

    async def main() -> None:
        stream = await harness.speech.open(job())
        await stream.admit()
        async with stream:
            received = 0
            async for _chunk in stream:
                received += 1
                if received == 3:
                    made = harness.engine.chunks_made
                    harness.sessions.cancel(stream.session.id, "cancelled by request")
        assert received == 3
        assert harness.engine.chunks_made - made <= 1  # at most the chunk already being made
        assert stream.session.error == "cancelled by request"

    run(main)


def test_leaving_mid_stream_waits_for_the_model_thread_before_the_slot_comes_back(tmp_path: Path) -> None:
    harness = Harness(tmp_path, slots=1, chunks_per_sentence=20, chunk_delay_s=0.05)

    async def main() -> None:
        stream = await harness.speech.open(job())
        await stream.admit()
        chunks = stream.__aiter__()
        await chunks.__anext__()
        # the consumer is cancelled while the next chunk is being made (as a disconnect does)
        pending = asyncio.ensure_future(chunks.__anext__())
        await asyncio.sleep(0.01)
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        stream.cancel("client disconnected")
        await stream.close()
        assert not harness.engine.making, "the slot came back while the model thread still worked for the stream"
        made = harness.engine.chunks_made
        await asyncio.sleep(0.15)
        assert harness.engine.chunks_made == made  # nothing runs on the model thread for it any more
        assert harness.gate.in_flight == 0 and stream.session.error == "client disconnected"

    run(main)


def test_a_model_failure_is_recorded_as_failed_with_its_cause(tmp_path: Path) -> None:
    harness = Harness(tmp_path, fail_at_chunk=2)

    async def main() -> None:
        stream = await harness.speech.open(job())
        await stream.admit()
        with pytest.raises(RuntimeError, match="fake model failed"):
            async with stream:
                async for _chunk in stream:
                    pass
        assert stream.session.state == StreamState.FAILED
        assert stream.session.error == "RuntimeError: the fake model failed"
        assert harness.gate.in_flight == 0

    run(main)


def test_a_task_group_wrapping_the_failure_still_records_the_cause(tmp_path: Path) -> None:
    harness = Harness(tmp_path, fail_at_chunk=1)

    async def main() -> None:
        stream = await harness.speech.open(job())
        await stream.admit()
        with pytest.raises(ExceptionGroup):
            async with stream:
                try:
                    async for _chunk in stream:
                        pass
                except RuntimeError as error:
                    raise ExceptionGroup("wrapped", [error]) from None
        assert stream.session.error == "RuntimeError: the fake model failed"

    run(main)


@pytest.mark.parametrize(
    ("bad_job", "error"),
    [
        (SpeechJob("Hi.", "xx", "Dummy Alto"), UnsupportedLanguage),
        (job("a" * 201), InvalidInput),
        (job("   "), InvalidInput),
        (job(voice=GivenLatents([[0.0] * 1000] * 31, [0.0] * 512)), InvalidLatents),
    ],
)
def test_a_job_that_cannot_be_served_is_refused_before_any_slot_or_model_work(
    tmp_path: Path, bad_job: SpeechJob, error: type[Exception]
) -> None:
    harness = Harness(tmp_path)

    async def main() -> None:
        with pytest.raises(error):
            await harness.speech.open(bad_job)

    run(main)
    assert harness.engine.jobs_submitted == 0 and harness.gate.in_flight == 0 and harness.sessions.live() == []


def test_a_taken_session_id_is_a_conflict_and_registers_nothing(tmp_path: Path) -> None:
    harness = Harness(tmp_path)

    async def main() -> None:
        first = await harness.speech.open(job(session_id="mine"))
        with pytest.raises(SessionConflict):
            await harness.speech.open(job(session_id="mine"))
        assert [stream.session.id for stream in harness.sessions.live()] == ["mine"]
        await first.close()
        with pytest.raises(SessionConflict):  # finished ones keep their id for the history's lifetime
            await harness.speech.open(job(session_id="mine"))

    run(main)


def test_refused_by_the_queue_is_recorded_as_failed_and_holds_nothing(tmp_path: Path) -> None:
    harness = Harness(tmp_path, slots=1, queue=0)

    async def main() -> None:
        holder = await harness.speech.open(job())
        await holder.admit()
        refused = await harness.speech.open(job())
        with pytest.raises(Overloaded):
            await refused.admit()
        assert refused.session.state == StreamState.FAILED and "slots are busy" in (refused.session.error or "")
        assert harness.gate.in_flight == 1 and harness.gate.queued == 0
        await holder.close()
        assert harness.gate.in_flight == 0

    run(main)


def test_a_stream_cancelled_while_queued_never_reaches_the_model(tmp_path: Path) -> None:
    harness = Harness(tmp_path, slots=1)

    async def main() -> None:
        holder = await harness.speech.open(job())
        await holder.admit()
        waiter = await harness.speech.open(job())
        admitting = asyncio.ensure_future(waiter.admit())
        await asyncio.sleep(0.01)
        assert harness.gate.queued == 1
        waiter.cancel("client disconnected while queued")
        admitting.cancel()
        await asyncio.gather(admitting, return_exceptions=True)
        assert waiter.session.state == StreamState.CANCELLED
        assert waiter.session.error == "client disconnected while queued"
        assert waiter.session.started_at is None and harness.engine.jobs_submitted == 0
        assert harness.gate.queued == 0
        await holder.close()

    run(main)


def test_equal_seeds_give_equal_audio_and_a_seed_is_chosen_when_none_is_given(tmp_path: Path) -> None:
    harness = Harness(tmp_path)

    async def speak(seed: int | None) -> tuple[int, bytes]:
        stream = await harness.speech.open(job(seed=seed))
        await stream.admit()
        async with stream:
            return stream.seed, b"".join([chunk async for chunk in stream])

    async def main() -> None:
        first, second, other = await speak(5), await speak(5), await speak(6)
        assert first == second and first[1] != other[1]
        chosen, _audio = await speak(None)
        assert chosen != (await speak(None))[0]

    run(main)


class _GoneClient:
    """A request whose client has already left: its next receive() says so."""

    async def receive(self) -> dict[str, str]:
        return {"type": "http.disconnect"}


def test_a_slot_won_just_as_the_client_left_goes_straight_back(tmp_path: Path) -> None:
    harness = Harness(tmp_path, slots=1)

    async def main() -> None:
        # the slot is free, so admission and the disconnect complete in the same turn of the loop
        with pytest.raises(ClientDisconnected):
            await open_admitted(_GoneClient(), harness.speech, job())  # type: ignore[arg-type]
        (session,) = harness.finished
        assert session.state == StreamState.CANCELLED and session.error == "client disconnected while queued"
        assert harness.gate.in_flight == 0 and harness.engine.chunks_made == 0

    run(main)
