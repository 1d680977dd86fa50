"""Wyoming under load, against a real server: a full server answers an `error` event, a client that leaves (while
queued or mid-sentence) frees its slot."""

from __future__ import annotations

import asyncio

import pytest
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from tests.conftest import wait_for
from tests.wyoming_client import Answer, RecordingEngine, describe, read_until, start

pytestmark = pytest.mark.live


def test_a_client_that_leaves_mid_sentence_frees_its_slot(tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = RecordingEngine(chunks_per_sentence=200, chunk_delay_s=0.05)
    with start(tmp_path_factory.mktemp("leaving"), engine, MAX_CONCURRENT_REQUESTS=1) as server:

        async def leave_while_queued() -> int:
            voice = SynthesizeVoice(name="Dummy Bass")
            async with server.connect() as holder:
                await holder.write_event(Synthesize(text="Holding the slot.", voice=voice).event())
                await read_until(holder, "audio-chunk")
                async with server.connect() as queued:
                    await queued.write_event(Synthesize(text="Waiting.", voice=voice).event())
                    with server.live.client() as http:
                        wait_for(lambda: http.get("/health").json()["requests"]["queued"] == 1, what="queued")
                with server.live.client() as http:  # it left: out of the queue at once, not at QUEUE_TIMEOUT
                    wait_for(
                        lambda: http.get("/health").json()["requests"]["queued"] == 0, timeout_s=3, what="unqueued"
                    )
                    return int(http.get("/health").json()["requests"]["in_flight"])

        assert asyncio.run(leave_while_queued()) in {0, 1}

        async def leave_after_first_chunk() -> None:
            async with server.connect() as client:
                await client.write_event(
                    Synthesize(text="A long sentence.", voice=SynthesizeVoice(name="Dummy Bass")).event()
                )
                await read_until(client, "audio-chunk")

        asyncio.run(leave_after_first_chunk())
        with server.live.client() as http:
            wait_for(lambda: http.get("/health").json()["requests"]["in_flight"] == 0, timeout_s=10, what="slot freed")
            made = engine.chunks_made
            assert made < 50  # the model stopped within a chunk or so, not after 200
            wait_for(lambda: 'outcome="cancelled"' in http.get("/metrics").text, timeout_s=5, what="cancel recorded")


def test_a_full_server_answers_an_error_event_not_a_wait(tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = RecordingEngine(chunks_per_sentence=100, chunk_delay_s=0.05)
    settings = {"MAX_CONCURRENT_REQUESTS": 1, "MAX_QUEUE_SIZE": 0}
    with start(tmp_path_factory.mktemp("full"), engine, **settings) as server:

        async def run() -> tuple[Event, Answer, Info]:
            voice = SynthesizeVoice(name="Dummy Bass")
            async with server.connect() as holder, server.connect() as client:
                await holder.write_event(Synthesize(text="Holding the only slot.", voice=voice).event())
                await read_until(holder, "audio-chunk")
                await client.write_event(Synthesize(text="Me too.", voice=voice).event())
                refused = (await read_until(client, "error", "audio-start", timeout_s=5)).events[-1][1]
                await client.write_event(SynthesizeStart(voice=voice).event())
                await client.write_event(SynthesizeChunk(text="A sentence. And another").event())
                await client.write_event(SynthesizeStop().event())
                streamed = await read_until(client, "synthesize-stopped", timeout_s=5)
                return refused, streamed, await describe(client)

        refused, streamed, info = asyncio.run(run())
        assert refused.type == "error" and Error.from_event(refused).code == "overloaded"
        assert "slots are busy" in Error.from_event(refused).text
        assert [Error.from_event(event).code for event in streamed.of("error")] == ["overloaded", "overloaded"]
        assert streamed.of("audio-start") == [] and info.tts
        with server.live.client() as http:
            assert (
                'family="wyoming",outcome="failed"' in http.get("/metrics").text
                or "failed" in http.get("/metrics").text
            )
