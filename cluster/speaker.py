"""A job's sentences spoken by any replica: the runner's speaker (services/jobs/speaker.py) through Ray Serve.

Every replica runs a job runner; the store's claims make one replica drive each job (its order, files and
store), and that replica sends each sentence through a deployment handle to `XttsReplica.speak_job_sentence`
(cluster/app.py): Serve picks the replica (the less busy of two), which speaks it with its own engine as a
background request (`ReplicaSentences`, around that replica's `LocalSpeaker`) and returns the PCM. A sentence's
audio depends only on its seed, so where it was spoken does not change the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any, cast

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from services.errors import ServiceError
from services.jobs.speaker import LocalSpeaker, SentenceSpeaker
from services.jobs.store import SentenceText

logger = logging.getLogger("xtts_server.cluster")

DEPLOYMENT = "xtts"
CANCEL_POLL_S = 0.05
"""How often a sentence in flight looks at its job's cancel flag (a fraction of an engine step)."""
RETRIES = 5
"""Sends of one sentence when a replica dies under it or Serve is full, before the job fails."""
RETRY_WAIT_S = 1.0


class ReplicaSentences:
    """The serving side: this replica speaks a sentence sent by any replica's runner (`LocalSpeaker`)."""

    def __init__(self) -> None:
        self.local: LocalSpeaker | None = None
        """This replica's engine as a job speaker; set once its model is up (`ServeSpeaker` is made then)."""

    async def speak(self, request: dict[str, Any], sentence: SentenceText) -> dict[str, Any]:
        """{"pcm": bytes or None} or {"error": message} (a ServiceError: the job's fault, told as plain data)."""
        if self.local is None:
            return {"error": "this replica's model is not ready"}
        cancel = threading.Event()
        spoken = asyncio.ensure_future(self.local.speak(request, sentence, cancel))
        try:
            pcm = await asyncio.shield(spoken)
        except asyncio.CancelledError:
            # Serve cancels this call when the sender's job is cancelled or fails: the flag frees the
            # engine row within a step (LocalSpeaker waits for the row to be idle before it returns).
            cancel.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await spoken
            raise
        except ServiceError as error:
            return {"error": error.message}
        return {"pcm": pcm}


class ServeSpeaker:
    """Sends each sentence to a replica Serve picks (this one included); see the module's docstring."""

    def __init__(self, application: str) -> None:
        self._application = application
        self._handle: DeploymentHandle | None = None

    def _deployment(self) -> DeploymentHandle:
        if self._handle is None:
            self._handle = serve.get_deployment_handle(DEPLOYMENT, app_name=self._application)
        return self._handle

    async def speak(self, request: dict[str, Any], sentence: SentenceText, cancel: threading.Event) -> bytes | None:
        for attempt in range(1, RETRIES + 1):
            if cancel.is_set():
                return None
            method = self._deployment().speak_job_sentence
            sent = method.remote(request, sentence.index, sentence.chapter, sentence.text)
            response = cast(DeploymentResponse, sent)  # a unary method: not a generator's response
            try:
                answer = await _unless_cancelled(response, cancel)
            except (RayActorError, BackPressureError) as error:  # another replica gets it, same seed, same audio
                if attempt == RETRIES:
                    raise
                logger.warning("sentence %d: %s; sending it again", sentence.index, type(error).__name__)
                await asyncio.sleep(RETRY_WAIT_S)
                continue
            if answer is None:
                return None
            if "error" in answer:
                raise ServiceError(answer["error"])
            pcm: bytes | None = answer["pcm"]
            return pcm
        return None


async def _unless_cancelled(response: DeploymentResponse, cancel: threading.Event) -> dict[str, Any] | None:
    """The replica's answer; None once `cancel` is set, the remote call then cancelled (its row freed)."""
    answer: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(response)
    try:
        while not cancel.is_set():
            done, _ = await asyncio.wait({answer}, timeout=CANCEL_POLL_S)
            if done:
                return answer.result()
    except asyncio.CancelledError:  # this runner stops: the replica stops speaking for it
        response.cancel()
        raise
    response.cancel()
    answer.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await answer
    return None


def job_speaker(application: str, sentences: ReplicaSentences, local: LocalSpeaker) -> SentenceSpeaker:
    """The runner's speaker on a replica: its own engine serves others' sentences, Serve spreads its own."""
    sentences.local = local
    return ServeSpeaker(application)
