"""Domain errors raised by the services; api/responses.py maps each to an HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a client can cause or should hear about."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(ServiceError):
    """The request is well-formed but cannot be served as asked (400)."""


class VoiceNotFound(ServiceError):
    """No saved voice or built-in speaker has this id (404)."""


class ModelNotFound(ServiceError):
    """An OpenAI-style model id that is not served (404)."""


class VoiceExists(ServiceError):
    """A saved voice already has this id and overwrite was not asked for (409)."""


class InvalidVoiceId(ServiceError):
    """The voice id is not of the allowed form (400)."""


class UnsupportedLanguage(ServiceError):
    """The language is not one the model speaks (400)."""


class InvalidAudio(ServiceError):
    """An upload could not be decoded as audio, or is unusable for cloning (400)."""


class UnsupportedMediaType(ServiceError):
    """An upload is not audio at all (415)."""


class PayloadTooLarge(ServiceError):
    """An upload is over MAX_UPLOAD_MB (413)."""


class SessionNotFound(ServiceError):
    """No stream session has this id (404)."""


class SessionConflict(ServiceError):
    """The session id is taken, or the session has already finished (409)."""


class Overloaded(ServiceError):
    """All slots and the wait queue are full, or the wait timed out (429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class NotReady(ServiceError):
    """The model is loading or the server is draining (503)."""


class ModelUnavailable(RuntimeError):
    """No model could be loaded at start-up; the message names the ways out."""
