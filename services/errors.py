"""Every error a client can cause or should hear about, each with its stable wire code.

A leaf module: it imports nothing of ours, so every layer (the engine included) raises these.
`api/errors.py` is the one place that turns them into HTTP statuses, headers and bodies.
"""

from __future__ import annotations

from typing import ClassVar

ECHO_LIMIT = 100
"""Characters of a client's value that an error repeats: a 1 MB field must not come back whole."""


def clipped(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def echoed(value: object) -> str:
    """A client's value as an error message quotes it: its repr, cut to ECHO_LIMIT characters."""
    if isinstance(value, str) and len(value) > ECHO_LIMIT:
        return repr(value[:ECHO_LIMIT]) + "…"
    return clipped(repr(value))


class ServiceError(Exception):
    """Base of every error a client can cause or should hear about."""

    code: ClassVar[str] = "service_error"
    """The `error` field on the wire: stable, whatever the class is called."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(ServiceError):
    """The request is well-formed but cannot be served as asked."""

    code = "invalid_input"


class UnsupportedLanguage(ServiceError):
    """The language is not one the model speaks."""

    code = "unsupported_language"


class InvalidVoiceId(ServiceError):
    """A voice id that is not of the allowed form reached the voice store."""

    code = "invalid_voice_id"


class InvalidLatents(ServiceError):
    """Latents whose shape or values XTTS cannot use."""

    code = "invalid_latents"


class InvalidAudio(ServiceError):
    """An upload could not be decoded as audio, or is unusable for cloning."""

    code = "invalid_audio"


class UnsupportedMediaType(ServiceError):
    """An upload is not audio at all."""

    code = "unsupported_media_type"


class PayloadTooLarge(ServiceError):
    """A request body is over MAX_UPLOAD_MB."""

    code = "payload_too_large"


class VoiceNotFound(ServiceError):
    """No saved voice or built-in speaker has this id."""

    code = "voice_not_found"


class ModelNotFound(ServiceError):
    """An OpenAI-style model id that is not served."""

    code = "model_not_found"


class SessionNotFound(ServiceError):
    """No stream session has this id."""

    code = "session_not_found"


class VoiceExists(ServiceError):
    """A saved voice already has this id and overwrite was not asked for."""

    code = "voice_exists"


class SessionConflict(ServiceError):
    """The session id is taken, or the session has already finished."""

    code = "session_conflict"


class JobNotFound(ServiceError):
    """No long-form job has this id (or it is another caller's)."""

    code = "job_not_found"


class JobNotFinished(ServiceError):
    """A job's result was asked for before the job completed."""

    code = "job_not_finished"


class UnsupportedData(ServiceError):
    """A /v1/tts/ws client sent a frame the socket does not take (binary: it reads JSON text frames)."""

    code = "unsupported_data"


class IdleTimeout(ServiceError):
    """A /v1/tts/ws socket sent nothing, and had nothing being spoken, for WS_IDLE_TIMEOUT."""

    code = "idle_timeout"


class VoiceUnreadable(ServiceError):
    """A file in VOICES_DIR is not a readable voice: the server's data, not the request, is bad."""

    code = "voice_unreadable"


class Unauthorized(ServiceError):
    """API keys are on and the request carries none, or one that is not a key."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """The caller is known but may not do this (an admin's action, or a write from a foreign web page)."""

    code = "forbidden"


class ServerPathRefused(Forbidden):
    """A request names a file on the server (`audio_file_path`) outside REFERENCE_AUDIO_DIR, or with none set."""

    code = "server_path_refused"


class HostNotAllowed(ServiceError):
    """The request names a `Host` that is not one of the server's (ALLOWED_HOSTS): DNS rebinding, or a name
    the server was not told about."""

    code = "host_not_allowed"


class RetryLater(ServiceError):
    """The request is fine but cannot be served now; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int, **details: object) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class Overloaded(RetryLater):
    """All slots and the wait queue are full, or the wait timed out."""

    code = "overloaded"


class TooManyJobs(RetryLater):
    """The caller has MAX_ACTIVE_JOBS jobs queued or running already."""

    code = "too_many_jobs"


class NotReady(RetryLater):
    """The model is loading or the server is draining."""

    code = "not_ready"


class ModelUnavailable(RuntimeError):
    """No model could be loaded at start-up; the message names the ways out (not a client error)."""
