"""The audio streaming response and the headers every speech response carries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from api.disconnect import client_gone
from services.speech_stream import SpeechStream
from services.stream_encoding import StreamEncoder, encode_chunk

logger = logging.getLogger(__name__)

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_headers(stream: SpeechStream, sample_rate: int) -> dict[str, str]:
    """What every speech response says about its stream."""
    return {"X-Session-ID": stream.session.id, "X-Seed": str(stream.seed), "X-Sample-Rate": str(sample_rate)}


class AudioStreamResponse(Response):
    """Sends an admitted SpeechStream as it is generated; stops generation when the client disconnects.

    Unlike Starlette's StreamingResponse it always closes the stream (freeing its slot) even if the
    body never started, and it watches for http.disconnect itself whatever the ASGI spec version.
    A stream that does not finish (a failure after the first byte, a cancel) ends the response without
    its final chunk, so the client sees an incomplete body rather than a finished one.
    """

    def __init__(self, stream: SpeechStream, encoder: StreamEncoder, headers: dict[str, str]) -> None:
        super().__init__(content=b"", media_type=encoder.media_type, headers={**STREAM_HEADERS, **headers})
        del self.headers["content-length"]
        self.stream = stream
        self.encoder = encoder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self.stream
        try:
            async with stream, anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    await client_gone(receive)
                    stream.cancel("client disconnected")
                    group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                if prefix := self.encoder.start():
                    await self._send(send, prefix)
                async for pcm in stream:
                    if encoded := await self._encoded(self.encoder.encode, pcm):
                        await self._send(send, encoded)
                if stream.complete:
                    if tail := await self._encoded(self.encoder.finish):
                        await self._send(send, tail)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                else:
                    # Cancelled (/stream_cancel, shutdown): returning without the final body message makes
                    # the server close the connection without the terminating chunk, so the client sees an
                    # incomplete body (curl exits 18, httpx raises) instead of a finished one.
                    logger.info("session %s: stream stopped before the end; closing without the final chunk",
                                stream.session.id)  # fmt: skip
                group.cancel_scope.cancel()
        except Exception as error:  # model failure or a broken connection after the 200 went out
            logger.error("session %s: stream ended early: %s: %s", stream.session.id, type(error).__name__, error)

    async def _encoded(self, work: Callable[..., bytes], *args: bytes) -> bytes:
        return await encode_chunk(self.encoder, self.stream, work, *args)

    async def _send(self, send: Send, chunk: bytes) -> None:
        started = time.perf_counter()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.stream.count_sent(len(chunk))
        self.stream.add_timing("send", time.perf_counter() - started)
