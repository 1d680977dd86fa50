"""A replica's link to the others through the exchange actor (cluster.exchange), as services.peers wants it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray

from cluster.exchange import Exchange
from cluster.speaker import ReplicaSentences, job_speaker
from services.jobs.speaker import LocalSpeaker, SentenceSpeaker
from services.peers import LocalAnswers, Question

logger = logging.getLogger("xtts_server.cluster")

NAMESPACE = "xtts"
POLL_WAIT_S = 1.0
LIVENESS_S = 5.0  # a replica silent this long (several missed polls) is gone: Ray is replacing it
ASK_TIMEOUT_S = 3.0


def exchange_actor(application: str) -> Any:
    """The application's one exchange (started by the first replica that needs it; one per Serve
    application, so two applications on one Ray cluster never see each other's sessions). Detached, so it
    outlives any one replica: a replica killed mid-stream must not take the others' exchange with it."""
    name = f"xtts-exchange-{application}"
    options = {"name": name, "namespace": NAMESPACE, "get_if_exists": True, "lifetime": "detached"}
    return ray.remote(Exchange).options(**options, max_concurrency=1000, num_cpus=0).remote(LIVENESS_S)


class RayPeers:
    """This replica answers its mailbox in the background and asks the others through the exchange."""

    def __init__(self, replica: str, application: str) -> None:
        self.replica: str | None = replica
        self._application = application
        self._exchange: Any = None
        self._serving: asyncio.Task[None] | None = None
        self.sentences = ReplicaSentences()
        """Job sentences other replicas send here (`XttsReplica.speak_job_sentence`)."""

    async def start(self, answers: LocalAnswers) -> None:
        self._exchange = exchange_actor(self._application)
        self._serving = asyncio.create_task(self._answer_forever(answers))

    async def stop(self) -> None:
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # shutdown goes on whatever it was
                await self._serving
            self._serving = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._exchange.leave.remote(self.replica), 2.0)

    async def ask(self, question: Question, args: tuple[object, ...]) -> list[object]:
        first_found = question != "metrics"  # a session lives on one replica; metrics come from all
        try:
            answers: list[object] = await asyncio.wait_for(
                self._exchange.ask.remote(self.replica, question, args, ASK_TIMEOUT_S, first_found),
                ASK_TIMEOUT_S + 2.0,
            )
        except Exception as error:  # the exchange restarting: answer from this replica alone meanwhile
            logger.warning("could not ask the other replicas (%s): %s", question, type(error).__name__)
            return []
        return answers

    def job_speaker(self, local: LocalSpeaker) -> SentenceSpeaker:
        """This replica's job sentences go to any replica through Serve; `local` speaks those sent here."""
        return job_speaker(self._application, self.sentences, local)

    async def _answer_forever(self, answers: LocalAnswers) -> None:
        while True:
            try:
                delivered = await self._exchange.poll.remote(self.replica, POLL_WAIT_S)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the exchange died (its node went): start or find it again
                logger.warning("lost the replicas' exchange (%s); reconnecting", type(error).__name__)
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    self._exchange = exchange_actor(self._application)
                continue
            for question_id, question, args in delivered:
                try:
                    answer = answers.answer(question, args)  # type: ignore[arg-type]
                except Exception:
                    logger.exception("answering a peer's %s failed", question)
                    answer = None
                try:
                    self._exchange.answer.remote(question_id, answer)
                except Exception as error:  # the asker times out; this loop must go on
                    logger.warning("could not answer a peer's %s: %s", question, type(error).__name__)
