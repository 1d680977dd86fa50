"""The one place errors become HTTP: status and headers per error class, bodies per API family."""

from __future__ import annotations

import json
import logging
from enum import IntEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services import errors
from services.errors import clipped

logger = logging.getLogger(__name__)

OPENAI_PREFIX = "/v1/"
MESSAGE_LIMIT = 1000
"""Characters of an error message: each value it quotes is clipped shorter (services.errors.echoed), this bounds
the rest."""
XTTS_API_PREFIX = "/xtts-api/"
ELEVENLABS_PREFIXES = ("/v1/text-to-speech/", "/v1/voices")

# Every ServiceError the server raises, by class; RetryLater's also carry Retry-After (headers_for).
STATUS_BY_ERROR: dict[type[errors.ServiceError], int] = {
    errors.InvalidInput: 400,
    errors.UnsupportedLanguage: 400,
    errors.InvalidAudio: 400,
    errors.HostNotAllowed: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.ServerPathRefused: 403,
    errors.VoiceNotFound: 404,
    errors.ModelNotFound: 404,
    errors.SessionNotFound: 404,
    errors.JobNotFound: 404,
    errors.VoiceExists: 409,
    errors.SessionConflict: 409,
    errors.JobNotFinished: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InvalidVoiceId: 422,
    errors.InvalidLatents: 422,
    errors.Overloaded: 429,
    errors.TooManyJobs: 429,
    errors.VoiceUnreadable: 500,
    errors.NotReady: 503,
    # only /v1/tts/ws raises these (SOCKET_CLOSE_BY_ERROR); their statuses are for completeness
    errors.IdleTimeout: 408,
    errors.UnsupportedData: 415,
}


class ClientDisconnected(Exception):
    """The client went away before its response was ready (nobody reads the answer)."""


class ErrorBody(BaseModel):
    """Every error the server answers with (outside /v1, where errors come in OpenAI's shape)."""

    error: str = Field(description="Machine-readable error code.", examples=["voice_not_found"])
    message: str = Field(description="What went wrong, for people.", examples=["no saved voice 'x'"])
    details: Any = Field(None, description="Extra facts: expected shapes, limits, the failing fields.")


class XttsApiErrorBody(ErrorBody):
    """Errors under /xtts-api: ours, plus the `detail` key xtts-api-server's clients read."""

    detail: str = Field(description="The message again, where FastAPI's default puts it.")


class ElevenLabsErrorDetail(BaseModel):
    status: str = Field(description="Machine-readable error code.", examples=["voice_not_found"])
    message: str


class ElevenLabsErrorBody(BaseModel):
    """Errors of ElevenLabs' routes (/v1/text-to-speech, /v1/voices), in ElevenLabs' shape."""

    detail: ElevenLabsErrorDetail


class OpenAIError(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = None
    code: str | None = Field(None, examples=["voice_not_found"])


class OpenAIErrorBody(BaseModel):
    """Errors under /v1, in OpenAI's shape."""

    error: OpenAIError


_STATUS_MEANINGS = {
    400: "Bad input (language, text, audio), or a Host that is not in ALLOWED_HOSTS.",
    401: "API keys are on and the request has none, or a wrong one (see WWW-Authenticate).",
    403: "Not allowed: an admin key is needed, a state-changing request came from a page on another origin, or "
    "`audio_file_path` names a file outside REFERENCE_AUDIO_DIR.",
    404: "Unknown voice, speaker, session or route.",
    409: "Conflict (voice exists, session id taken or finished).",
    413: "Request body over MAX_UPLOAD_MB.",
    422: "Request fails validation (fields, ranges, ids, latent shapes, Unicode).",
    429: "Overloaded: retry after the Retry-After seconds.",
    500: "A fault of the server (its log has the details).",
    503: "Model loading or server shutting down.",
}


def error_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": meaning} for status, meaning in _STATUS_MEANINGS.items()}


# Every status a route may answer, in the error shape of its API family (listed for every route of it).
ERROR_RESPONSES = error_responses(ErrorBody)
OPENAI_ERROR_RESPONSES = error_responses(OpenAIErrorBody)
XTTS_API_ERROR_RESPONSES = error_responses(XttsApiErrorBody)
ELEVENLABS_ERROR_RESPONSES = error_responses(ElevenLabsErrorBody)


class ErrorJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error may quote the request, and a lone surrogate in it (valid in
    JSON's \\u escapes, not in UTF-8) must not turn a 4xx into a 500 while rendering."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def status_for(error: errors.ServiceError) -> int:
    for error_type, status in STATUS_BY_ERROR.items():
        if isinstance(error, error_type):
            return status
    return 500


class CloseCode(IntEnum):
    """RFC 6455 close codes /v1/tts/ws ends with."""

    NORMAL = 1000
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # the server is shutting down: reconnect (to another replica)
    TRY_AGAIN_LATER = 1013  # the model is not ready yet


# /v1/tts/ws: every ServiceError reaches the client as an `error` event (socket_error_event) and the socket goes on,
# except these, which then close it with this code; before the config is accepted, any error closes it with 1008.
SOCKET_CLOSE_BY_ERROR: dict[type[errors.ServiceError], CloseCode] = {
    errors.UnsupportedData: CloseCode.UNSUPPORTED_DATA,
    errors.IdleTimeout: CloseCode.NORMAL,
}


def socket_close_for(error: errors.ServiceError, configured: bool) -> CloseCode | None:
    """The close code that ends a socket after `error`, or None: it is reported and the socket goes on."""
    for error_type, code in SOCKET_CLOSE_BY_ERROR.items():
        if isinstance(error, error_type):
            return code
    return None if configured else CloseCode.POLICY_VIOLATION


def socket_error_event(error: errors.ServiceError) -> dict[str, object]:
    """An error as the socket sends it: `{"type": "error", "error": code, "message"}` (+ `retry_after_s`)."""
    event: dict[str, object] = {"type": "error", "error": error.code, "message": clipped(error.message, MESSAGE_LIMIT)}
    if isinstance(error, errors.RetryLater):
        event["retry_after_s"] = error.retry_after_s
    return event


def headers_for(error: errors.ServiceError) -> dict[str, str] | None:
    if isinstance(error, errors.RetryLater):
        return {"Retry-After": str(error.retry_after_s)}
    if isinstance(error, errors.Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="xtts-server"'}
    return None


def error_response(
    path: str, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Our error schema; under /v1/ OpenAI's, so its client libraries raise their usual errors (ElevenLabs' on
    its routes)."""
    message = clipped(message, MESSAGE_LIMIT)
    if path.startswith(ELEVENLABS_PREFIXES):
        return ErrorJSONResponse({"detail": {"status": code, "message": message}}, status_code=status, headers=headers)
    if path.startswith(OPENAI_PREFIX):
        param = details.get("param") if isinstance(details, dict) else None
        if isinstance(details, list) and details:
            param = details[0].get("field")
        kind = "invalid_request_error" if status < 500 else "server_error"
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return ErrorJSONResponse(body, status_code=status, headers=headers)
    body = jsonable_encoder(ErrorBody(error=code, message=message, details=details))
    if path.startswith(XTTS_API_PREFIX):
        body["detail"] = message  # xtts-api-server's clients read FastAPI's default key
    return ErrorJSONResponse(body, status_code=status, headers=headers)


def service_error_response(path: str, error: errors.ServiceError) -> JSONResponse:
    """A domain error as the API family at `path` renders it (string details, often the client's values, clipped)."""
    details = {key: clipped(value) if isinstance(value, str) else value for key, value in error.details.items()}
    return error_response(path, status_for(error), error.code, error.message, details or None, headers_for(error))


def register_exception_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and stray HTTP errors to one JSON shape."""

    @app.exception_handler(errors.ServiceError)
    async def service_error(request: Request, error: errors.ServiceError) -> JSONResponse:
        response = service_error_response(request.url.path, error)
        if response.status_code >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, error.message)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {
                # keys and messages may quote the request (an unknown 1 MB key, a value in a ValueError)
                "field": ".".join(clipped(str(part)) for part in problem["loc"][1:]) or "body",
                "message": clipped(problem["msg"], MESSAGE_LIMIT),
                "type": problem["type"],
            }
            for problem in error.errors()[:20]  # a bad 32x1024 list would otherwise list thousands
        ]
        message = "; ".join(f"{problem['field']}: {problem['message']}" for problem in problems[:5])
        return error_response(request.url.path, 422, "validation_error", message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(
            request.url.path, error.status_code, code, str(error.detail), headers=getattr(error, "headers", None)
        )

    @app.exception_handler(ClientDisconnected)
    async def client_gone(request: Request, error: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(
            request.url.path, 500, "internal_error", "internal server error; the server log has the details"
        )
