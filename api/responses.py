"""Response models, the audio streaming response, and the one place errors become HTTP statuses."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from models.voice_storage import VoiceUnreadable
from services import errors
from services.encoders import AudioEncoder
from services.latents import InvalidLatents
from services.tts import AudioStream

logger = logging.getLogger(__name__)


class ClientDisconnected(Exception):
    """The client went away before its response was ready."""


class ErrorBody(BaseModel):
    """Every error the server answers with."""

    error: str = Field(description="Machine-readable error code.", examples=["voice_not_found"])
    message: str = Field(description="What went wrong, for people.", examples=["no saved voice 'x'"])
    details: Any = Field(None, description="Extra facts: expected shapes, limits, the failing fields.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Bad input (language, text, voice id, audio).",
        404: "Unknown voice, speaker or session.",
        409: "Conflict (voice exists, session id taken or finished).",
        422: "Request fails validation (fields, ranges, latent shapes).",
        429: "Overloaded: retry after the Retry-After seconds.",
        503: "Model loading or server shutting down.",
    }.items()
}

_STATUS_BY_ERROR: list[tuple[type[Exception], int]] = [
    (errors.InvalidInput, 400),
    (errors.InvalidVoiceId, 400),
    (errors.UnsupportedLanguage, 400),
    (errors.InvalidAudio, 400),
    (errors.VoiceNotFound, 404),
    (errors.ModelNotFound, 404),
    (errors.SessionNotFound, 404),
    (errors.VoiceExists, 409),
    (errors.SessionConflict, 409),
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (InvalidLatents, 422),
    (errors.Overloaded, 429),
    (VoiceUnreadable, 500),
    (errors.NotReady, 503),
]


def _code(error: Exception) -> str:
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def error_response(
    request: Request, status: int, code: str, message: str, details: Any = None, headers: dict | None = None
) -> JSONResponse:
    """Our error schema; under /v1/ OpenAI's, so its client libraries raise their usual errors."""
    if request.url.path.startswith("/v1/"):
        param = details.get("param") if isinstance(details, dict) else None
        if isinstance(details, list) and details:
            param = details[0].get("field")
        kind = "invalid_request_error" if status < 500 else "server_error"
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)
    return JSONResponse(
        jsonable_encoder(ErrorBody(error=code, message=message, details=details)), status_code=status, headers=headers
    )


def status_for(error: Exception) -> int:
    for error_type, status in _STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return 500


def register_exception_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and stray HTTP errors to one JSON shape."""

    @app.exception_handler(errors.ServiceError)
    async def service_error(request: Request, error: errors.ServiceError) -> JSONResponse:
        status = status_for(error)
        headers = None
        if isinstance(error, errors.Overloaded):
            headers = {"Retry-After": str(error.retry_after_s)}
        elif isinstance(error, errors.NotReady):
            headers = {"Retry-After": "5"}
        if status >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, error.message)
        return error_response(request, status, _code(error), error.message, error.details or None, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(part) for part in problem["loc"][1:]) or "body",
                "message": problem["msg"],
                "type": problem["type"],
            }
            for problem in error.errors()[:20]  # a bad 32x1024 list would otherwise list thousands
        ]
        message = "; ".join(f"{problem['field']}: {problem['message']}" for problem in problems[:5])
        return error_response(request, 422, "validation_error", message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(
            request, error.status_code, code, str(error.detail), headers=getattr(error, "headers", None)
        )

    @app.exception_handler(ClientDisconnected)
    async def client_gone(request: Request, error: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "internal server error; the server log has the details")


STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_headers(stream: AudioStream, sample_rate: int) -> dict[str, str]:
    """What every speech response says about its stream."""
    return {"X-Session-ID": stream.session.id, "X-Seed": str(stream.seed), "X-Sample-Rate": str(sample_rate)}


class AudioStreamResponse(Response):
    """Sends an AudioStream as it is generated; stops generation when the client disconnects.

    Unlike Starlette's StreamingResponse it always closes the stream (freeing its slot) even if the
    body never started, and it watches for http.disconnect itself whatever the ASGI spec version.
    """

    def __init__(self, stream: AudioStream, encoder: AudioEncoder, headers: dict[str, str]) -> None:
        super().__init__(content=b"", media_type=encoder.media_type, headers={**STREAM_HEADERS, **headers})
        del self.headers["content-length"]
        self.stream = stream
        self.encoder = encoder

    async def _encoded(self, work: Callable[..., bytes], *args: bytes) -> bytes:
        # FFmpeg encoders do real work: off the event loop, but not on the model thread either.
        if not self.encoder.needs_thread:
            return work(*args)
        started = time.perf_counter()
        encoded = await anyio.to_thread.run_sync(work, *args)
        self.stream.session.add_timing("encode", time.perf_counter() - started)
        return encoded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self.stream.session
        failure: BaseException | None = None
        try:
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    session.error = session.error or "client disconnected"
                    session.cancel_event.set()
                    group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                if prefix := self.encoder.start():
                    await self._send(send, prefix)
                async for pcm in self.stream:
                    if encoded := await self._encoded(self.encoder.encode, pcm):
                        await self._send(send, encoded)
                if tail := await self._encoded(self.encoder.finish):
                    await self._send(send, tail)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except Exception as error:  # model failure or a broken connection after the 200 went out
            failure = error
            logger.error("session %s: stream ended early: %s: %s", session.id, type(error).__name__, error)
        finally:
            await self.stream.close(failure)

    async def _send(self, send: Send, chunk: bytes) -> None:
        started = time.perf_counter()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.stream.session.bytes_sent += len(chunk)
        self.stream.session.add_timing("send", time.perf_counter() - started)
