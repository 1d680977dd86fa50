"""Run request work unless the client leaves first (queued requests must never reach the model)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request

from api.responses import ClientDisconnected
from services.tts import AudioStream

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(
    request: Request, work: Coroutine[Any, Any, T], discard: Callable[[T], Awaitable[None]] | None = None
) -> T:
    """Await `work`, cancelling it and raising ClientDisconnected if the client goes away first.

    `discard` releases a result that was ready just as the client left.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if not task.done():
            task.cancel()
    try:
        result = await task
    except asyncio.CancelledError:
        raise ClientDisconnected() from None
    if watcher.cancelled() or watcher.exception() is not None:
        return result
    if discard is not None:
        await discard(result)
    raise ClientDisconnected()


async def _give_back(stream: AudioStream) -> None:
    stream.session.error = "client disconnected while queued"
    await stream.close(asyncio.CancelledError())


async def start_unless_disconnected(request: Request, work: Coroutine[Any, Any, AudioStream]) -> AudioStream:
    """Validation, voice and queue, abandoned if the client leaves meanwhile (its slot goes straight back)."""
    return await until_disconnected(request, work, _give_back)
