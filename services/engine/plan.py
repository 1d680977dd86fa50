"""The batching policy as a pure function: what the next model-thread step does, given who is where.

`plan(running, waiting, limits)` looks at plain facts about each stream (a `StreamView`) and returns a
`StepPlan`: who leaves, who joins, whose next sentence is prefilled, who pauses and who steps. It reads
no clock, takes no lock and touches no tensor, so every rule here is tested deterministically
(tests/test_plan.py); the scheduler (scheduler.py) carries the plan out with the decoder.

The rules:
- A cancelled stream leaves. (One that finishes its last sentence, or whose row fails, leaves at once in
  the step that found it, as the scheduler delivers: its reader should not wait a step for its end.)
- Waiting streams join in arrival order while there are rows free (`max_batch_size`); a cancelled one
  leaves without ever joining. The admission gate upstream hands the engine no more streams than rows,
  so in the server a stream waits here for one step at most; the one queue is the gate's.
- A newcomer's first prompt is prefilled whole in the step it joins (in arrival order): its first audio
  comes first, as its first steps do below, and chunking it would add the others' steps (and their
  vocoder work) to its wait. Every other prompt is prefilled in chunks between decode steps (vLLM's
  chunked prefill), so it never holds the streams already speaking for long: while any stream can step, a
  step prefills at most `prefill_chunk` positions of them, streams whose sentence ended and whose next
  prompt is not ready first, then look-ahead: the next sentence of a stream still speaking, so that at its
  sentence's end the prompt is ready and the stream never stalls. When nobody can step, nothing is held
  up: the prompts due now are prefilled whole. A stream steps once its prompt is complete (in the same
  step if this step completes it).
- A stream with `buffer_seconds` of audio its reader has not taken pauses (it keeps its row).
- Newcomers without their first audio step on their own, for at most `first_chunk_priority_steps`
  steps: a step of one row costs a third of a step of eight on a CPU, so a newcomer's first audio comes
  nearly as fast as on an idle server while the others pause for about half a second. The others'
  prompt chunks pause with them (a 32-position chunk costs about as much as a one-row step).
- Background streams (a long-form job's sentences) get only what live speech leaves. Live streams are
  planned first, by the rules above, as if no background stream were there. A live stream that finds
  every row taken takes a background stream's row: the background stream that joined last (it has done
  the least) is preempted, leaves, and its owner starts that sentence over later (same seed, same
  audio: vLLM's preemption by recompute). Background streams join, prefill and step only in a step
  where no live stream steps or prefills, by the same rules among themselves (without first-chunk
  priority: nobody is listening to their first chunk), in the rows live streams leave free, except that
  their prompts are always cut into whole chunks from the start (`_aligned_prefill`), several prompts a
  step, so each prompt is computed the same whoever else is there. So a live newcomer waits for at most
  the one background step in progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class BatchLimits:
    """How many streams decode together, how far one may run ahead of its reader, how much prefill a step takes."""

    max_batch_size: int = 8
    buffer_seconds: float = 10.0
    first_chunk_priority_steps: int = 32
    """Steps a newcomer may take alone (with other newcomers) before its first chunk; 0 turns it off."""
    prefill_chunk: int = 32
    """Prompt positions prefilled in a step while other streams step (about 60 ms of int8 prefill on 2 cores)."""
    background_prefill_chunks: int = 4
    """Background prompts that each advance one chunk in a background step (in one forward pass)."""


@dataclass(frozen=True)
class StreamView(Generic[K]):
    """What the policy knows of one stream."""

    key: K
    cancelled: bool = False
    prompt_left: int = 0
    """Positions of the prompt it needs before it can step (its first sentence's, or the next one's once its
    sentence ended); 0: it can step."""
    lookahead_left: int = 0
    """Positions of its next sentence's prompt still to prefill while it speaks the current one."""
    buffered_seconds: float = 0.0
    has_audio: bool = False
    """It has produced audio already."""
    steps_before_audio: int = 0
    """Steps taken while it had no audio yet."""
    background: bool = False
    """A long-form job's sentence: it gets only the rows and steps live streams leave."""


@dataclass(frozen=True)
class Prefill(Generic[K]):
    """Run the next `positions` positions of a stream's pending prompt (None: all of them)."""

    key: K
    positions: int | None = None


@dataclass(frozen=True)
class StepPlan(Generic[K]):
    """One step's decisions, by stream key (each list in batch or arrival order)."""

    leave: list[K] = field(default_factory=list)
    preempt: list[K] = field(default_factory=list)
    """Background streams whose rows live streams need: they leave, and their owners start them over."""
    join: list[K] = field(default_factory=list)
    prefill: list[Prefill[K]] = field(default_factory=list)
    paused: list[K] = field(default_factory=list)
    step: list[K] = field(default_factory=list)
    still_waiting: list[K] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        """Nothing to step or prefill now: the next step comes when something changes (a read, a newcomer, a cancel)."""
        return not self.step and not self.prefill


def plan(running: Sequence[StreamView[K]], waiting: Sequence[StreamView[K]], limits: BatchLimits) -> StepPlan[K]:
    """The next step's decisions; see the module's docstring for the rules."""
    leave = [view.key for view in [*running, *waiting] if view.cancelled]
    live_staying = [view for view in running if not view.cancelled and not view.background]
    background_staying = [view for view in running if not view.cancelled and view.background]
    live_candidates = [view for view in waiting if not view.cancelled and not view.background]
    background_candidates = [view for view in waiting if not view.cancelled and view.background]

    room = max(limits.max_batch_size - len(live_staying), 0)
    live_joining, live_waiting = live_candidates[:room], live_candidates[room:]
    over = len(live_staying) + len(live_joining) + len(background_staying) - limits.max_batch_size
    preempted = background_staying[len(background_staying) - over :] if over > 0 else []
    background_staying = background_staying[: len(background_staying) - len(preempted)]

    live = _plan_rows(live_staying, live_joining, limits)
    if live.step or live.prefill:  # live speech uses the model this step: background streams wait
        background: _Rows[K] = _Rows()
        background_waiting = background_candidates
    else:
        taken = len(live_staying) + len(live_joining) + len(background_staying)
        background_room = max(limits.max_batch_size - taken, 0)
        background_joining = background_candidates[:background_room]
        background_waiting = background_candidates[background_room:]
        unhurried = dataclasses.replace(limits, first_chunk_priority_steps=0)
        background = _plan_rows(background_staying, background_joining, unhurried, aligned=True)
    return StepPlan(
        leave=leave,
        preempt=[view.key for view in preempted],
        join=live.join + background.join,
        prefill=live.prefill + background.prefill,
        paused=live.paused + background.paused,
        step=live.step + background.step,
        still_waiting=[view.key for view in live_waiting + background_waiting],
    )


@dataclass
class _Rows(Generic[K]):
    """One class of streams' part of a step (live, or background)."""

    join: list[K] = field(default_factory=list)
    prefill: list[Prefill[K]] = field(default_factory=list)
    paused: list[K] = field(default_factory=list)
    step: list[K] = field(default_factory=list)


def _plan_rows(
    staying: list[StreamView[K]], joining: list[StreamView[K]], limits: BatchLimits, aligned: bool = False
) -> _Rows[K]:
    """Prefill, pauses and steps of the streams in the batch (and those joining it now)."""
    batch = staying + joining
    unpaused = [view for view in batch if view.buffered_seconds < limits.buffer_seconds]
    ready = {view.key for view in unpaused if view.prompt_left == 0}
    if aligned:
        prefill, completed = _aligned_prefill(joining, staying, limits)
    else:
        prefill, completed = _share_prefill(joining, staying, busy=bool(ready), limits=limits)
    stepping = [view for view in unpaused if view.key in ready or view.key in completed]
    starting = [
        view for view in stepping if not view.has_audio and view.steps_before_audio < limits.first_chunk_priority_steps
    ]
    if starting:  # newcomers take their first steps alone: the others' prompts wait with the others' steps
        first = {view.key for view in starting}
        prefill = [chunk for chunk in prefill if chunk.key in first]
    return _Rows(
        join=[view.key for view in joining],
        prefill=prefill,
        paused=[view.key for view in batch if view.buffered_seconds >= limits.buffer_seconds],
        step=[view.key for view in (starting or stepping)],
    )


def _share_prefill(
    joining: list[StreamView[K]], staying: list[StreamView[K]], busy: bool, limits: BatchLimits
) -> tuple[list[Prefill[K]], set[K]]:
    """The step's prefill chunks in priority order, and the streams whose prompt they complete."""
    arrived = [view for view in staying if view.prompt_left > 0 and not view.has_audio] + [
        view for view in joining if view.prompt_left > 0
    ]  # in arrival order: those that joined in an earlier step came first
    newcomers = [view for view in arrived if view.steps_before_audio < limits.first_chunk_priority_steps]
    due = [view for view in arrived if view not in newcomers]
    due += [view for view in staying if view.prompt_left > 0 and view.has_audio]
    ahead = [view for view in staying if view.prompt_left == 0 and view.lookahead_left > 0 and view.has_audio]
    # a newcomer's first audio comes first (as its first steps do): its prompt is prefilled whole, now
    chunks = [Prefill(view.key) for view in newcomers]
    completed = {view.key for view in newcomers}
    if not busy:  # nobody is speaking: the prompts due now hold up no one
        chunks += [Prefill(view.key) for view in due]
        completed |= {view.key for view in due}
        due = []
    budget = limits.prefill_chunk
    for view, left in [(view, view.prompt_left) for view in due] + [(view, view.lookahead_left) for view in ahead]:
        if budget <= 0:
            break
        positions = min(left, budget)
        budget -= positions
        chunks.append(Prefill(view.key, positions))
        if positions == left and view.prompt_left > 0:
            completed.add(view.key)
    return chunks, completed


def _aligned_prefill(
    joining: list[StreamView[K]], staying: list[StreamView[K]], limits: BatchLimits
) -> tuple[list[Prefill[K]], set[K]]:
    """Background prompts' chunks: up to `background_prefill_chunks` prompts advance one whole chunk each
    (`prefill_chunk` positions, the last one shorter), those needed now first, busy or not. Every prompt is
    cut at the same positions whoever else is there, so its numbers are the same (a job resumed after a
    restart makes the same bytes), and several prompts share a forward pass."""
    due = [view for view in staying + joining if view.prompt_left > 0]
    ahead = [view for view in staying if view.prompt_left == 0 and view.lookahead_left > 0]
    queue = [(view, view.prompt_left) for view in due] + [(view, view.lookahead_left) for view in ahead]
    chunks, completed = [], set()
    for view, left in queue[: limits.background_prefill_chunks]:
        positions = min(left, limits.prefill_chunk)
        chunks.append(Prefill(view.key, positions))
        if positions == left and view.prompt_left > 0:
            completed.add(view.key)
    return chunks, completed
