"""Request work that stops when the client leaves (queued requests must never reach the model)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request
from starlette.types import Receive

from api.errors import ClientDisconnected
from services.speech import SpeechJob, SpeechService
from services.speech_stream import SpeechStream

T = TypeVar("T")


async def client_gone(receive: Receive) -> None:
    """Returns once the client has gone: an http.disconnect, or an error from `receive`, which is how some
    servers say it (Ray Serve cancels the request under us)."""
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass


async def until_disconnected(request: Request, work: Coroutine[Any, Any, T], on_disconnect: Callable[[], None]) -> T:
    """Await `work`; if the client goes away first, call `on_disconnect`, cancel the work and raise
    ClientDisconnected (also when the work finished just as the client left)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(client_gone(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left = watcher.done() and not watcher.cancelled() and watcher.exception() is None
        if left:
            on_disconnect()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if not task.done():
            task.cancel()
    try:
        result = await task
    except asyncio.CancelledError:
        raise ClientDisconnected() from None
    if left:
        raise ClientDisconnected()
    return result


async def open_admitted(request: Request, speech: SpeechService, job: SpeechJob) -> SpeechStream:
    """Check the job, then wait for a slot; a client that leaves while queued never reaches the model,
    and a slot won just as it left goes straight back."""
    stream = await speech.open(job)
    try:
        await until_disconnected(
            request, stream.admit(), on_disconnect=lambda: stream.cancel("client disconnected while queued")
        )
    except ClientDisconnected:
        await stream.close()
        raise
    return stream
