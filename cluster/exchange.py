"""The replicas' exchange: how a replica asks the others about a session (or their metrics).

One instance runs as a named Ray actor (cluster.peers starts it); it is plain asyncio, so it is tested
without Ray. Each replica long-polls its own mailbox, so a question (a cancel above all) reaches the
replica that holds the stream at once, not at the next poll; an asker waits for the answers, bounded.
A replica with no poll open and none for `liveness_s` is taken for gone: it is no longer asked. (A
killed replica's open poll is cancelled by Ray when its caller dies, or ends at its timeout.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

# What a question carries: an id to answer it by, the question, its arguments.
Delivery = tuple[int, str, tuple[object, ...]]


@dataclass
class _Mailbox:
    questions: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    last_seen: float = field(default_factory=time.monotonic)
    polling: int = 0  # polls open now: a replica waiting on its mailbox is alive however long it waits


class Exchange:
    """Mailboxes by replica name, and the askers waiting for answers."""

    def __init__(self, liveness_s: float = 10.0) -> None:
        self._liveness_s = liveness_s
        self._mailboxes: dict[str, _Mailbox] = {}
        self._waiting: dict[int, asyncio.Future[object]] = {}
        self._ids = itertools.count(1)

    async def poll(self, replica: str, wait_s: float) -> list[Delivery]:
        """The replica's questions; waits up to `wait_s` for the first. Polling also says it is alive."""
        mailbox = self._mailboxes.setdefault(replica, _Mailbox())
        mailbox.polling += 1
        try:
            first = await asyncio.wait_for(mailbox.questions.get(), wait_s)
        except TimeoutError:
            return []
        finally:
            mailbox.polling -= 1
            mailbox.last_seen = time.monotonic()
        delivered = [first]
        while not mailbox.questions.empty():
            delivered.append(mailbox.questions.get_nowait())
        return delivered

    def answer(self, question_id: int, answer: object) -> None:
        waiting = self._waiting.get(question_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)

    async def ask(
        self, asker: str, question: str, args: tuple[object, ...], timeout_s: float, first_found: bool = False
    ) -> list[object]:
        """Every other live replica's answer within `timeout_s` (None answers are left out). With
        `first_found`, returns as soon as one replica answers something: a session lives on one replica."""
        loop = asyncio.get_running_loop()
        asked: list[asyncio.Future[object]] = []
        ids = []
        for replica in self.replicas():
            if replica == asker:
                continue
            question_id = next(self._ids)
            self._waiting[question_id] = future = loop.create_future()
            self._mailboxes[replica].questions.put_nowait((question_id, question, args))
            asked.append(future)
            ids.append(question_id)
        answers: list[object] = []
        try:
            pending = set(asked)
            deadline = loop.time() + timeout_s
            while pending and (remaining := deadline - loop.time()) > 0:
                done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                answers.extend(answer for future in done if (answer := future.result()) is not None)
                if first_found and answers:
                    break
        finally:
            for question_id in ids:
                self._waiting.pop(question_id, None)
        return answers

    def replicas(self) -> list[str]:
        """Replicas that polled recently; the others are forgotten with their unread questions."""
        now = time.monotonic()
        for replica, mailbox in list(self._mailboxes.items()):
            if not mailbox.polling and now - mailbox.last_seen > self._liveness_s:
                del self._mailboxes[replica]
        return sorted(self._mailboxes)

    def leave(self, replica: str) -> None:
        """A replica shutting down: ask it nothing more."""
        self._mailboxes.pop(replica, None)
