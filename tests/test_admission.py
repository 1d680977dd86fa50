"""The admission gate, the server's one queue: slots, a bounded queue, timeouts, draining and Retry-After."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from services.admission import AdmissionGate
from services.engine.plan import BatchLimits
from services.errors import NotReady, Overloaded
from tests.conftest import app_settings, live_server, wait_for
from tests.fakes import FakeEngine


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=10))


def test_slots_then_queue_then_429_and_a_released_slot_goes_to_the_queue() -> None:
    async def main() -> None:
        gate = AdmissionGate(max_active=2, max_queue=1, queue_timeout_s=5)
        await gate.acquire()
        await gate.acquire()
        assert (gate.in_flight, gate.queued) == (2, 0)
        waiting = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        assert gate.queued == 1
        with pytest.raises(Overloaded) as refused:
            await gate.acquire()
        assert refused.value.retry_after_s >= 1
        gate.release(held_s=1.0)
        waited_s = await waiting
        assert waited_s >= 0 and (gate.in_flight, gate.queued) == (2, 0)

    run(main)


def test_a_queued_request_times_out_with_429_and_leaves_the_queue() -> None:
    async def main() -> None:
        gate = AdmissionGate(max_active=1, max_queue=5, queue_timeout_s=0.05)
        await gate.acquire()
        with pytest.raises(Overloaded, match="QUEUE_TIMEOUT"):
            await gate.acquire()
        assert (gate.in_flight, gate.queued) == (1, 0)

    run(main)


def test_a_cancelled_wait_leaves_the_queue_and_takes_no_slot() -> None:
    async def main() -> None:
        gate = AdmissionGate(max_active=1, max_queue=5, queue_timeout_s=5)
        await gate.acquire()
        waiting = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert (gate.in_flight, gate.queued) == (1, 0)
        gate.release(held_s=0.1)
        await gate.acquire()  # the slot is free again
        assert gate.in_flight == 1

    run(main)


def test_draining_refuses_with_503_and_retry_after() -> None:
    async def main() -> None:
        gate = AdmissionGate(max_active=1, max_queue=1, queue_timeout_s=5)
        gate.draining = True
        with pytest.raises(NotReady) as refused:
            await gate.acquire()
        assert refused.value.retry_after_s >= 1 and gate.in_flight == 0

    run(main)


def test_retry_after_follows_how_long_slots_are_held_and_how_many_wait() -> None:
    async def main() -> None:
        gate = AdmissionGate(max_active=1, max_queue=10, queue_timeout_s=5)
        at_start = gate.retry_after_s()
        for _ in range(20):
            await gate.acquire()
            gate.release(held_s=30.0)
        alone = gate.retry_after_s()
        assert at_start < alone <= 30
        await gate.acquire()
        waiting = [asyncio.ensure_future(gate.acquire()) for _ in range(5)]
        await asyncio.sleep(0)
        assert alone < gate.retry_after_s() <= 120
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    run(main)


def test_a_request_beyond_the_batch_waits_in_the_one_queue_and_times_out_there(tmp_path: Path) -> None:
    """Two batch rows, ten MAX_CONCURRENT_REQUESTS: the third request waits in the gate's queue (counted by
    /health, `queued` in /stream_status) and QUEUE_TIMEOUT ends its wait with a 429, as any queued request's."""
    engine = FakeEngine(chunks_per_sentence=10_000, limits=BatchLimits(max_batch_size=2, buffer_seconds=0.5))
    settings = app_settings(tmp_path, MAX_CONCURRENT_REQUESTS=10, QUEUE_TIMEOUT=2)
    body = {"text": "A long stream nobody reads.", "language": "en", "speaker_id": "Dummy Alto"}
    with live_server(engine, settings) as live, live.client() as first, live.client() as second:
        with live.client() as third, live.client() as probe:
            with first.stream("POST", "/tts_stream", json=body) as one, second.stream("POST", "/tts_stream", json=body):
                assert one.status_code == 200
                assert probe.get("/health").json()["requests"]["capacity"] == 2
                answer: dict[str, httpx.Response] = {}
                waiting = threading.Thread(
                    target=lambda: answer.update(third=third.post("/tts_stream", json={**body, "session_id": "third"}))
                )
                waiting.start()
                wait_for(lambda: probe.get("/health").json()["requests"]["queued"] == 1, what="the third one queued")
                assert probe.get("/stream_status/third").json()["state"] == "queued"
                assert engine.scheduler.running == 2  # the engine holds no stream back: whoever waits, waits above
                waiting.join(15)
    refused = answer["third"]
    assert refused.status_code == 429 and "QUEUE_TIMEOUT" in refused.json()["message"]
