"""The batch scheduler carrying out the policy, on the fake decoder: batch size, newcomers first, backpressure,
cancels and a failed row (no model: each step is a few milliseconds of seeded noise)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from services.engine.params import GenerationParams
from services.engine.plan import BatchLimits
from services.engine.stream import Preempted
from services.engine.synthesis_stream import SynthesisStream
from services.errors import InvalidLatents
from tests.fakes import FakeEngine


async def fake_stream(engine: FakeEngine, text: str, seed: int) -> tuple[SynthesisStream, threading.Event]:
    cancel = threading.Event()
    sentences = await engine.plan(text, "en", True)
    params = GenerationParams(seed=seed)
    return engine.synthesize(sentences, engine.builtin_speakers["Dummy Alto"], params, cancel), cancel


def test_max_batch_size_bounds_the_batch_and_a_waiting_stream_joins_when_one_leaves() -> None:
    limits = BatchLimits(max_batch_size=2, first_chunk_priority_steps=0)
    engine = FakeEngine(chunks_per_sentence=5, chunk_delay_s=0.002, limits=limits)

    async def run() -> list[int]:
        streams = [(await fake_stream(engine, "One sentence.", seed))[0] for seed in range(3)]

        async def read(stream: SynthesisStream) -> int:
            return len([chunk async for chunk in stream])

        counts = await asyncio.gather(*(read(stream) for stream in streams))
        assert all(stream.complete for stream in streams)
        return list(counts)

    try:
        assert asyncio.run(run()) == [5, 5, 5]
        assert engine.scheduler.peak_batch == 2
        assert engine.scheduler.steps == 10  # two together for 5 steps, then the third alone for 5
    finally:
        engine.shutdown()


def test_a_newcomer_steps_alone_until_its_first_chunk() -> None:
    engine = FakeEngine(chunks_per_sentence=30, chunk_delay_s=0.002)

    async def run() -> None:
        running, _ = await fake_stream(engine, "A long sentence already playing.", seed=1)
        chunks = aiter(running)
        for _ in range(5):
            await anext(chunks)
        newcomer, _ = await fake_stream(engine, "A newcomer.", seed=2)
        await asyncio.gather(consume(chunks), consume(aiter(newcomer)))

    async def consume(chunks: AsyncIterator[bytes]) -> None:
        async for _ in chunks:
            pass

    try:
        asyncio.run(run())
        joined = next(index for index, batch in enumerate(engine.batches) if 2 in batch)
        assert engine.batches[joined] == [2], "the newcomer's first step was not its own"
        assert engine.batches[joined + 1] == [1, 2], "after its first chunk it did not join the batch"
    finally:
        engine.shutdown()


def test_a_slow_reader_pauses_only_its_own_stream_and_resumes() -> None:
    engine = FakeEngine(chunks_per_sentence=60, chunk_seconds=0.1, limits=BatchLimits(buffer_seconds=1.0))

    async def run() -> None:
        slow, _ = await fake_stream(engine, "A long sentence read slowly.", seed=1)
        fast, _ = await fake_stream(engine, "A long sentence read at once.", seed=2)
        slow_chunks = aiter(slow)
        first = [await anext(slow_chunks)]
        fast_chunks = [chunk async for chunk in fast]  # the other stream goes on meanwhile
        assert len(fast_chunks) == 60 and fast.complete
        # made ahead of its reader: up to the limit, plus the chunk that crossed it
        assert 1.0 <= slow.buffered_seconds <= 1.1 + 1e-9
        rest = [chunk async for chunk in slow_chunks]  # reading again resumes it
        assert len(first + rest) == 60 and slow.complete

    try:
        asyncio.run(run())
    finally:
        engine.shutdown()


def test_cancelling_a_paused_stream_frees_it() -> None:
    engine = FakeEngine(chunks_per_sentence=60, chunk_seconds=0.1, limits=BatchLimits(buffer_seconds=0.5))

    async def run() -> None:
        stream, cancel = await fake_stream(engine, "Nobody reads this.", seed=1)
        chunks = aiter(stream)
        await anext(chunks)
        for _ in range(100):  # until it has paused
            await asyncio.sleep(0.01)
            if stream.buffered_seconds >= 0.5:
                break
        await asyncio.sleep(0.05)
        assert engine.scheduler.running == 1 and stream.buffered_seconds <= 0.6 + 1e-9
        cancel.set()
        await asyncio.wait_for(stream.wait_idle(), 5)
        assert engine.scheduler.running == 0

    try:
        asyncio.run(run())
    finally:
        engine.shutdown()


def test_a_cancelled_stream_takes_at_most_one_more_step() -> None:
    engine = FakeEngine(chunks_per_sentence=200, chunk_delay_s=0.005)

    async def run() -> int:
        stream, cancel = await fake_stream(engine, "A long sentence cut short.", seed=1)
        chunks = aiter(stream)
        for _ in range(3):
            await anext(chunks)
        steps_at_cancel = len(engine.batches)
        cancel.set()
        await asyncio.wait_for(stream.wait_idle(), 5)
        return sum(1 in batch for batch in engine.batches[steps_at_cancel:])

    try:
        assert asyncio.run(run()) <= 1
        assert engine.scheduler.running == 0
    finally:
        engine.shutdown()


def test_a_failed_row_leaves_and_the_others_step_on() -> None:
    """The scheduler's part of batch isolation: a row the decoder reports failed ends that stream with its
    error; the streams beside it get every chunk, the same as without it."""
    engine = FakeEngine(chunks_per_sentence=6, chunk_delay_s=0.002, fail_row_seed=2, fail_row_at_chunk=3)

    async def run() -> tuple[list[list[bytes]], BaseException | None]:
        streams = [(await fake_stream(engine, "One sentence.", seed))[0] for seed in (1, 2, 3)]

        async def read(stream: SynthesisStream) -> list[bytes] | BaseException:
            try:
                return [chunk async for chunk in stream]
            except InvalidLatents as error:
                return error

        results = await asyncio.gather(*(read(stream) for stream in streams))
        failure = results.pop(1)
        assert isinstance(failure, BaseException)
        return [result for result in results if isinstance(result, list)], failure

    alone = FakeEngine(chunks_per_sentence=6)

    async def solo(seed: int) -> list[bytes]:
        stream, _ = await fake_stream(alone, "One sentence.", seed)
        return [chunk async for chunk in stream]

    try:
        others, failure = asyncio.run(run())
        assert isinstance(failure, InvalidLatents)
        assert others == [asyncio.run(solo(1)), asyncio.run(solo(3))]
        assert engine.scheduler.running == 0
    finally:
        engine.shutdown()
        alone.shutdown()


def test_a_live_stream_takes_a_background_streams_row_and_the_background_one_ends_preempted() -> None:
    limits = BatchLimits(max_batch_size=2, first_chunk_priority_steps=0)
    engine = FakeEngine(chunks_per_sentence=20, chunk_delay_s=0.002, limits=limits)

    async def run() -> None:
        sentences = await engine.plan("A job's sentence.", "en", True)
        voice = engine.builtin_speakers["Dummy Alto"]
        jobs = [
            engine.synthesize(sentences, voice, GenerationParams(seed=seed), threading.Event(), background=True)
            for seed in (1, 2)
        ]
        job_chunks = [aiter(job) for job in jobs]
        for chunks in job_chunks:
            await anext(chunks)  # both jobs are in the batch, stepping
        live, _ = await fake_stream(engine, "A live one.", seed=3)
        live_chunks = [chunk async for chunk in live]
        assert live.complete and len(live_chunks) == 20
        with pytest.raises(Preempted):
            async for _ in job_chunks[1]:  # the one that joined last gave its row
                pass
        first = [chunk async for chunk in job_chunks[0]]
        assert jobs[0].complete and len(first) == 19  # the other waited for the live one, then finished
        seeds_stepped = [seed for batch in engine.batches for seed in batch]
        live_steps = [i for i, batch in enumerate(engine.batches) if 3 in batch]
        assert all(batch == [3] for batch in (engine.batches[i] for i in live_steps))  # the live one stepped alone
        assert seeds_stepped.count(3) == 20

    try:
        asyncio.run(run())
        assert engine.scheduler.preempted == 1
    finally:
        engine.shutdown()


def test_prompts_due_together_are_prefilled_in_one_call_and_a_failing_one_fails_alone() -> None:
    engine = FakeEngine(chunks_per_sentence=8, chunk_delay_s=0.05, fail_prefill_seed=2)

    async def run() -> tuple[SynthesisStream, SynthesisStream, SynthesisStream]:
        playing, _ = await fake_stream(engine, "A sentence already playing.", seed=1)
        chunks = aiter(playing)
        await anext(chunks)  # it steps now (50 ms a step): both newcomers arrive during one step
        failing, _ = await fake_stream(engine, "A prompt whose prefill fails.", seed=2)
        healthy, _ = await fake_stream(engine, "A prompt beside it.", seed=3)
        counts = await asyncio.gather(*(drain(aiter(stream)) for stream in (failing, healthy)), drain(chunks))
        assert counts[:2] == ["the fake prefill failed", 8]
        return playing, failing, healthy

    async def drain(chunks: AsyncIterator[bytes]) -> int | str:
        try:
            return len([chunk async for chunk in chunks])
        except RuntimeError as error:  # the stream's error reaches its reader
            return str(error)

    try:
        playing, failing, healthy = asyncio.run(run())
        assert [2, 3] in engine.prefills, engine.prefills  # one call for both
        assert engine.prefills[engine.prefills.index([2, 3]) + 1 :][:2] == [[2], [3]]  # then each alone
        assert not failing.complete and healthy.complete and playing.complete
    finally:
        engine.shutdown()


def test_a_live_stream_that_arrives_during_a_background_prefill_goes_before_the_background_step() -> None:
    engine = FakeEngine(chunks_per_sentence=60, chunk_delay_s=0.01, prefill_delay_s=0.3)

    async def run() -> None:
        sentences = await engine.plan("A job's sentence.", "en", True)
        voice = engine.builtin_speakers["Dummy Alto"]

        def job(seed: int) -> SynthesisStream:
            return engine.synthesize(sentences, voice, GenerationParams(seed=seed), threading.Event(), background=True)

        first = aiter(job(11))
        await anext(first)  # it steps
        # the second's prompt takes 0.3 s, in the step that would step the first again (a stream joins once read)
        second = asyncio.create_task(drain(aiter(job(12))))
        await asyncio.sleep(0.1)
        live, _ = await fake_stream(engine, "A live one.", seed=3)
        await asyncio.gather(drain(first), second, drain(aiter(live)))

    async def drain(chunks: AsyncIterator[bytes]) -> int:
        return len([chunk async for chunk in chunks])

    try:
        asyncio.run(run())
        after = engine.calls[engine.calls.index(("prefill", [12])) + 1 :]
        assert after[:2] == [("prefill", [3]), ("step", [3])], engine.calls  # the background step was skipped
    finally:
        engine.shutdown()


def test_a_newcomer_that_arrives_during_a_live_streams_prefill_steps_first() -> None:
    engine = FakeEngine(chunks_per_sentence=4, chunk_delay_s=0.01, prefill_delay_s=0.3)

    async def run() -> None:
        playing, _ = await fake_stream(engine, "The first sentence. And the second one.", seed=1)
        chunks = aiter(playing)
        for _ in range(4):  # its first sentence; its second one's prompt (0.3 s) comes next
            await anext(chunks)
        reading = asyncio.create_task(drain(chunks))
        await asyncio.sleep(0.1)
        newcomer, _ = await fake_stream(engine, "A newcomer.", seed=3)
        await asyncio.gather(reading, drain(aiter(newcomer)))

    async def drain(chunks: AsyncIterator[bytes]) -> int:
        return len([chunk async for chunk in chunks])

    try:
        asyncio.run(run())
        second_prompt = [index for index, call in enumerate(engine.calls) if call == ("prefill", [1])][1]
        after = engine.calls[second_prompt + 1 :]
        assert after[:2] == [("prefill", [3]), ("step", [3])], engine.calls  # the newcomer before the first's step
    finally:
        engine.shutdown()
