"""Run request work unless the client leaves first (queued requests must never reach the model)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from fastapi import Request

from api.responses import ClientDisconnected
from services.tts import AudioStream


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def start_unless_disconnected(request: Request, work: Coroutine[Any, Any, AudioStream]) -> AudioStream:
    """Await `work` (validation, voice, queue) but abandon it if the client disconnects meanwhile."""
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
        stream = await task
    except asyncio.CancelledError:
        raise ClientDisconnected() from None
    if watcher.cancelled() or not watcher.done() or watcher.exception() is not None:
        return stream
    # The client left just as the stream was admitted: give its slot straight back.
    stream.session.error = "client disconnected while queued"
    await stream.close(asyncio.CancelledError())
    raise ClientDisconnected()
