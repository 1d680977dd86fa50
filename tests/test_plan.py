"""The batching policy, rule by rule: a pure function of plain facts, so no threads, clocks or sleeps."""

from __future__ import annotations

import dataclasses

from services.engine.plan import BatchLimits, Prefill, StreamView, plan

LIMITS = BatchLimits(max_batch_size=3, buffer_seconds=2.0, first_chunk_priority_steps=4, prefill_chunk=32)


def playing(
    key: str, cancelled: bool = False, prompt_left: int = 0, lookahead_left: int = 0, buffered_seconds: float = 0.5
) -> StreamView[str]:
    """A stream in the batch that has audio (and, unless told, room in its buffer and nothing to prefill)."""
    return StreamView(
        key,
        cancelled=cancelled,
        prompt_left=prompt_left,
        lookahead_left=lookahead_left,
        buffered_seconds=buffered_seconds,
        has_audio=True,
    )


def arriving(key: str, prompt: int = 20, cancelled: bool = False) -> StreamView[str]:
    """A stream waiting to join, with its first sentence's prompt to prefill."""
    return StreamView(key, cancelled=cancelled, prompt_left=prompt)


def test_waiting_streams_join_in_arrival_order_while_rows_are_free() -> None:
    decision = plan([playing("a")], [arriving("b"), arriving("c"), arriving("d")], LIMITS)
    assert decision.join == ["b", "c"]
    assert decision.still_waiting == ["d"]
    assert [chunk.key for chunk in decision.prefill] == ["b", "c"]  # newcomers' prompts, in arrival order


def test_a_full_batch_takes_nobody() -> None:
    decision = plan([playing("a"), playing("b"), playing("c")], [arriving("d")], LIMITS)
    assert decision.join == [] and decision.still_waiting == ["d"]
    assert decision.step == ["a", "b", "c"]


def test_cancelled_streams_leave_whether_running_or_waiting_and_free_their_row() -> None:
    running = [playing("a", cancelled=True), playing("b"), playing("c")]
    decision = plan(running, [arriving("d", cancelled=True), arriving("e")], LIMITS)
    assert decision.leave == ["a", "d"]
    assert decision.join == ["e"]  # a's row went to the next one waiting
    assert "a" not in decision.step and "d" not in decision.step


def test_on_an_idle_batch_a_newcomers_prompt_is_prefilled_whole_and_it_steps_at_once() -> None:
    decision = plan([], [arriving("a", prompt=500)], LIMITS)
    assert decision.prefill == [Prefill("a", None)]  # nobody is speaking: nothing is held up
    assert decision.step == ["a"]


def test_a_newcomers_prompt_is_prefilled_whole_and_it_steps_at_once_even_while_others_speak() -> None:
    decision = plan([playing("a"), playing("b")], [arriving("new", prompt=70)], LIMITS)
    assert decision.prefill == [Prefill("new", None)]  # its first audio first: chunks would add a and b's steps
    assert decision.step == ["new"]  # and it steps on its own (first-chunk priority)


def test_while_newcomers_take_their_first_steps_alone_the_others_prompts_wait_too() -> None:
    running = [
        playing("ended", prompt_left=10),
        playing("ahead", lookahead_left=40),
        StreamView("earlier", prompt_left=12),  # joined in an earlier step (its prompt not complete yet)
    ]
    decision = plan(running, [arriving("new", prompt=8)], BatchLimits(max_batch_size=4, prefill_chunk=32))
    assert decision.prefill == [Prefill("earlier"), Prefill("new")]  # whole, in arrival order
    assert set(decision.step) == {"earlier", "new"}  # complete now; newcomers take their first steps alone


def test_the_chunk_goes_to_sentence_ends_then_look_ahead() -> None:
    running = [playing("ended", prompt_left=10), playing("ahead", lookahead_left=40), playing("other")]
    decision = plan(running, [], BatchLimits(max_batch_size=4, prefill_chunk=32))
    assert decision.prefill == [Prefill("ended", 10), Prefill("ahead", 22)]
    assert decision.step == ["ended", "ahead", "other"]


def test_sentence_ends_share_the_chunk_in_batch_order() -> None:
    running = [playing("a", prompt_left=20), playing("b", prompt_left=20), playing("c")]
    decision = plan(running, [], LIMITS)
    assert decision.prefill == [Prefill("a", 20), Prefill("b", 12)]
    assert decision.step == ["a", "c"]  # b's prompt is not complete: it waits a step


def test_a_stream_whose_sentence_ended_steps_once_its_next_prompt_is_complete() -> None:
    decision = plan([playing("a", prompt_left=40), playing("b")], [], LIMITS)
    assert decision.prefill == [Prefill("a", 32)] and decision.step == ["b"]
    decision = plan([playing("a", prompt_left=8), playing("b")], [], LIMITS)
    assert decision.prefill == [Prefill("a", 8)] and decision.step == ["a", "b"]


def test_look_ahead_prefills_a_speaking_streams_next_sentence_and_it_keeps_stepping() -> None:
    decision = plan([playing("a", lookahead_left=50), playing("b")], [], LIMITS)
    assert decision.prefill == [Prefill("a", 32)]
    assert decision.step == ["a", "b"]
    newcomer = StreamView("new", lookahead_left=50, steps_before_audio=1)
    assert plan([newcomer], [], LIMITS).prefill == []  # not before its first audio: that comes first


def test_a_stream_with_a_full_buffer_pauses_and_keeps_its_row() -> None:
    decision = plan([playing("slow", buffered_seconds=2.0), playing("b")], [arriving("c"), arriving("d")], LIMITS)
    assert decision.paused == ["slow"]
    assert decision.step == ["c"]  # the newcomer first (b waits a few steps), never the paused one
    assert decision.join == ["c"] and decision.still_waiting == ["d"]  # the paused stream still holds a row
    assert "slow" not in decision.leave


def test_paused_streams_alone_use_the_quiet_to_prefill_ahead() -> None:
    decision = plan([playing("slow", lookahead_left=50, buffered_seconds=2.0)], [], LIMITS)
    assert decision.prefill == [Prefill("slow", 32)] and decision.step == []
    assert not decision.idle  # another step comes for the rest of the prompt
    done = plan([playing("slow", buffered_seconds=2.0)], [], LIMITS)
    assert done.idle


def test_newcomers_without_audio_step_on_their_own() -> None:
    running = [playing("a"), StreamView("new", steps_before_audio=1), playing("b")]
    assert plan(running, [], LIMITS).step == ["new"]


def test_a_newcomer_and_a_joining_stream_step_together_before_their_first_audio() -> None:
    decision = plan([playing("a"), StreamView("new", steps_before_audio=2)], [arriving("joining", 5)], LIMITS)
    assert decision.step == ["new", "joining"]


def test_first_chunk_priority_ends_after_its_steps() -> None:
    running = [playing("a"), StreamView("new", steps_before_audio=LIMITS.first_chunk_priority_steps)]
    assert plan(running, [], LIMITS).step == ["a", "new"]


def test_first_chunk_priority_can_be_turned_off() -> None:
    limits = BatchLimits(max_batch_size=3, first_chunk_priority_steps=0)
    assert plan([playing("a"), StreamView("new")], [], limits).step == ["a", "new"]


def test_a_paused_newcomer_does_not_take_priority() -> None:
    running = [playing("a"), StreamView("new", buffered_seconds=5.0)]
    decision = plan(running, [], LIMITS)
    assert decision.step == ["a"] and decision.paused == ["new"]


def test_nothing_to_step_is_idle() -> None:
    decision = plan([playing("a", buffered_seconds=3.0)], [], LIMITS)
    assert decision.idle and decision.paused == ["a"]
    assert plan([], [], LIMITS).idle


def job(key: str, prompt: int = 0, has_audio: bool = True) -> StreamView[str]:
    """A long-form job's sentence: a background stream (in the batch, or waiting with its prompt to prefill)."""
    return StreamView(key, prompt_left=prompt, has_audio=has_audio, background=True)


def test_background_streams_step_together_when_no_live_stream_needs_the_model() -> None:
    decision = plan([job("j1"), job("j2")], [job("j3", prompt=40, has_audio=False)], LIMITS)
    assert decision.join == ["j3"]
    assert decision.prefill == [Prefill("j3", 32)]  # chunked while the others step: no first-chunk priority
    assert decision.step == ["j1", "j2"]
    decision = plan([job("j1"), job("j2", prompt=8, has_audio=False)], [], LIMITS)
    assert decision.step == ["j1", "j2"]  # nobody listens to a job's first chunk: it does not step alone


def test_background_prompts_advance_a_whole_chunk_each_several_a_step_busy_or_not() -> None:
    limits = dataclasses.replace(LIMITS, max_batch_size=8, background_prefill_chunks=2)
    waiting = [job("j1", prompt=70, has_audio=False), job("j2", prompt=20, has_audio=False), job("j3", prompt=40)]
    idle = plan([], waiting, limits)
    # nobody steps, yet no prompt is prefilled whole: each is cut at the same places whoever else is there
    assert idle.prefill == [Prefill("j1", 32), Prefill("j2", 20)]
    assert idle.step == ["j2"] and idle.join == ["j1", "j2", "j3"]
    busy = plan([job("j0"), job("j1", prompt=38, has_audio=False)], [job("j3", prompt=40)], limits)
    assert busy.prefill == [Prefill("j1", 32), Prefill("j3", 32)]  # several prompts in the step, whole chunks
    assert busy.step == ["j0"]


def test_a_live_stream_that_steps_holds_every_background_stream() -> None:
    decision = plan([playing("live"), job("j1")], [job("j2", prompt=40)], LIMITS)
    assert decision.step == ["live"]
    assert decision.prefill == [] and decision.join == []
    assert decision.still_waiting == ["j2"]
    assert not decision.idle


def test_background_streams_step_while_the_live_ones_are_paused_by_their_readers() -> None:
    decision = plan([playing("live", buffered_seconds=5.0), job("j1")], [], LIMITS)
    assert decision.paused == ["live"]
    assert decision.step == ["j1"]


def test_a_live_newcomer_takes_the_row_of_the_background_stream_that_joined_last() -> None:
    running = [playing("live"), job("j1"), job("j2")]
    decision = plan(running, [arriving("new"), job("j3")], LIMITS)
    assert decision.preempt == ["j2"]  # it has done the least; its owner starts its sentence over
    assert decision.join == ["new"]
    assert decision.step == ["new"]  # first-chunk priority, and j1 waits for live speech
    assert decision.still_waiting == ["j3"]


def test_live_streams_join_in_arrival_order_before_background_streams_that_came_first() -> None:
    decision = plan([], [job("j1", prompt=10), arriving("live", prompt=10)], LIMITS)
    assert decision.join == ["live"]
    assert decision.still_waiting == ["j1"]
    decision = plan([playing("live", buffered_seconds=5.0)], [job("j1", prompt=10)], LIMITS)
    assert decision.join == ["j1"] and decision.step == ["j1"]  # the live one is paused: the job gets the model


def test_a_cancelled_background_stream_leaves_and_is_not_preempted() -> None:
    running = [playing("a"), playing("b"), StreamView("j1", cancelled=True, background=True)]
    decision = plan(running, [arriving("c")], LIMITS)
    assert decision.leave == ["j1"] and decision.preempt == []
    assert decision.join == ["c"]
