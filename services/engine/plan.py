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
- A joining stream, or one whose sentence just ended with more to come, has its next sentence prefilled
  before the step (between two steps: nobody waits for another's sentence to end).
- A stream with `buffer_seconds` of audio its reader has not taken pauses (it keeps its row).
- Newcomers without their first audio step on their own, for at most `first_chunk_priority_steps`
  steps: a step of one row costs a third of a step of eight on a CPU, so a newcomer's first audio comes
  nearly as fast as on an idle server while the others pause for about half a second.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class BatchLimits:
    """How many streams decode together, and how far one may run ahead of its reader."""

    max_batch_size: int = 8
    buffer_seconds: float = 10.0
    first_chunk_priority_steps: int = 32
    """Steps a newcomer may take alone (with other newcomers) before its first chunk; 0 turns it off."""


@dataclass(frozen=True)
class StreamView(Generic[K]):
    """What the policy knows of one stream."""

    key: K
    cancelled: bool = False
    next_sentence: bool = False
    """Its current sentence ended and another follows: prefill it before stepping."""
    buffered_seconds: float = 0.0
    has_audio: bool = False
    """It has produced audio already."""
    steps_before_audio: int = 0
    """Steps taken while it had no audio yet."""


@dataclass(frozen=True)
class StepPlan(Generic[K]):
    """One step's decisions, by stream key (each list in batch or arrival order)."""

    leave: list[K] = field(default_factory=list)
    join: list[K] = field(default_factory=list)
    prefill: list[K] = field(default_factory=list)
    paused: list[K] = field(default_factory=list)
    step: list[K] = field(default_factory=list)
    still_waiting: list[K] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        """Nothing to step now: the next step comes when something changes (a read, a newcomer, a cancel)."""
        return not self.step


def plan(running: Sequence[StreamView[K]], waiting: Sequence[StreamView[K]], limits: BatchLimits) -> StepPlan[K]:
    """The next step's decisions; see the module's docstring for the rules."""
    leave = [view.key for view in running if view.cancelled]
    staying = [view for view in running if not view.cancelled]
    leave += [view.key for view in waiting if view.cancelled]
    candidates = [view for view in waiting if not view.cancelled]
    room = max(limits.max_batch_size - len(staying), 0)
    joining, still_waiting = candidates[:room], candidates[room:]

    batch = staying + joining
    prefill = [view.key for view in joining] + [view.key for view in staying if view.next_sentence]
    paused = [view for view in batch if view.buffered_seconds >= limits.buffer_seconds]
    stepping = [view for view in batch if view.buffered_seconds < limits.buffer_seconds]
    starting = [
        view for view in stepping if not view.has_audio and view.steps_before_audio < limits.first_chunk_priority_steps
    ]
    return StepPlan(
        leave=leave,
        join=[view.key for view in joining],
        prefill=prefill,
        paused=[view.key for view in paused],
        step=[view.key for view in (starting or stepping)],
        still_waiting=[view.key for view in still_waiting],
    )
