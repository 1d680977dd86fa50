"""Admission control: a bounded number of requests at work, a bounded wait queue, then 429."""

from __future__ import annotations

import asyncio
import math
import time

from services.errors import NotReady, Overloaded


class AdmissionGate:
    """min(MAX_CONCURRENT_REQUESTS, batch rows) slots behind a MAX_QUEUE_SIZE queue with QUEUE_TIMEOUT.

    The server's one queue: an admitted request has a batch row waiting for it (the engine's scheduler
    never holds a stream back), so whoever waits, waits here.
    """

    def __init__(self, max_active: int, max_queue: int, queue_timeout_s: float) -> None:
        self.capacity = max_active
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self._slots = asyncio.Semaphore(max_active)
        self.in_flight = 0
        self.queued = 0
        self.draining = False
        # Smoothed seconds a slot is held, for Retry-After.
        self._average_hold_s = 2.0

    def fit_to(self, rows: int) -> None:
        """Admit no more requests than the engine has batch rows, so a request beyond the batch waits here,
        in the one queue (counted in /health, bounded by QUEUE_TIMEOUT), not inside the engine. Call it
        before anything is admitted (at start-up)."""
        if rows < self.capacity:
            assert self.in_flight == 0 and self.queued == 0, "resize the gate before admitting anything"
            self.capacity = rows
            self._slots = asyncio.Semaphore(rows)

    def retry_after_s(self) -> int:
        waiting_rounds = (self.queued + 1) / self.capacity
        return max(1, min(120, math.ceil(self._average_hold_s * waiting_rounds)))

    async def acquire(self) -> float:
        """Take a slot, waiting in the queue if need be; returns the seconds waited."""
        if self.draining:
            raise NotReady("the server is shutting down", retry_after_s=self.retry_after_s())
        if self._slots.locked() and self.queued >= self.max_queue:
            raise Overloaded(
                f"all {self.capacity} slots are busy and the queue of {self.max_queue} is full",
                retry_after_s=self.retry_after_s(),
            )
        started = time.perf_counter()
        self.queued += 1
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded(
                f"no slot came free within QUEUE_TIMEOUT ({self.queue_timeout_s:g} s)",
                retry_after_s=self.retry_after_s(),
            ) from None
        finally:
            self.queued -= 1
        self.in_flight += 1
        return time.perf_counter() - started

    def release(self, held_s: float) -> None:
        """Give a slot back once the work it admitted has ended."""
        self.in_flight -= 1
        self._slots.release()
        self._average_hold_s = 0.8 * self._average_hold_s + 0.2 * held_s
