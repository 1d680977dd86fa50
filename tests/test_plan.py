"""The batching policy, rule by rule: a pure function of plain facts, so no threads, clocks or sleeps."""

from __future__ import annotations

from services.engine.plan import BatchLimits, StreamView, plan

LIMITS = BatchLimits(max_batch_size=3, buffer_seconds=2.0, first_chunk_priority_steps=4)


def playing(
    key: str, cancelled: bool = False, next_sentence: bool = False, buffered_seconds: float = 0.5
) -> StreamView[str]:
    """A stream in the batch that has audio (and, unless told, room in its buffer)."""
    return StreamView(
        key, cancelled=cancelled, next_sentence=next_sentence, buffered_seconds=buffered_seconds, has_audio=True
    )


def test_waiting_streams_join_in_arrival_order_while_rows_are_free() -> None:
    decision = plan([playing("a")], [StreamView("b"), StreamView("c"), StreamView("d")], LIMITS)
    assert decision.join == ["b", "c"]
    assert decision.still_waiting == ["d"]
    assert decision.prefill == ["b", "c"]  # a newcomer's first sentence is prefilled before it steps


def test_a_full_batch_takes_nobody() -> None:
    decision = plan([playing("a"), playing("b"), playing("c")], [StreamView("d")], LIMITS)
    assert decision.join == [] and decision.still_waiting == ["d"]
    assert decision.step == ["a", "b", "c"]


def test_cancelled_streams_leave_whether_running_or_waiting_and_free_their_row() -> None:
    running = [playing("a", cancelled=True), playing("b"), playing("c")]
    decision = plan(running, [StreamView("d", cancelled=True), StreamView("e")], LIMITS)
    assert decision.leave == ["a", "d"]
    assert decision.join == ["e"]  # a's row went to the next one waiting
    assert "a" not in decision.step and "d" not in decision.step


def test_a_stream_whose_sentence_ended_gets_its_next_one_prefilled_and_steps() -> None:
    decision = plan([playing("a", next_sentence=True), playing("b")], [], LIMITS)
    assert decision.prefill == ["a"]
    assert decision.step == ["a", "b"]


def test_a_stream_with_a_full_buffer_pauses_and_keeps_its_row() -> None:
    decision = plan([playing("slow", buffered_seconds=2.0), playing("b")], [StreamView("c"), StreamView("d")], LIMITS)
    assert decision.paused == ["slow"]
    assert decision.step == ["c"]  # the newcomer first (b waits a few steps), never the paused one
    assert decision.join == ["c"] and decision.still_waiting == ["d"]  # the paused stream still holds a row
    assert "slow" not in decision.leave


def test_newcomers_without_audio_step_on_their_own() -> None:
    running = [playing("a"), StreamView("new", steps_before_audio=1), playing("b")]
    assert plan(running, [], LIMITS).step == ["new"]


def test_a_newcomer_and_a_joining_stream_step_together_before_their_first_audio() -> None:
    decision = plan([playing("a"), StreamView("new", steps_before_audio=2)], [StreamView("joining")], LIMITS)
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
