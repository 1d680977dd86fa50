"""Refuse request bodies over MAX_UPLOAD_MB with 413 without reading the rest."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import service_error_response
from services.errors import PayloadTooLarge


class UploadLimitMiddleware:
    """Pure ASGI (so streaming responses stay untouched): checks Content-Length, then counts bytes."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"upload is over MAX_UPLOAD_MB ({self.limit_bytes / 1e6:g} MB)", limit_bytes=self.limit_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit_bytes:
            # Answered by the one error renderer (OpenAI's shape under /v1); the unread body is left
            # unread, so the connection closes after this answer.
            response = service_error_response(scope["path"], self._too_large())
            response.headers["Connection"] = "close"
            return await response(scope, receive, send)
        received = 0
        exceeded = False

        async def counted() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    exceeded = True
                    raise self._too_large()
            return message

        async def guarded_send(message: Message) -> None:
            # Once the body overflowed, whatever the app makes of it (a form parser's 400 "error parsing
            # the body", our own 413) is dropped: the 413 below is the answer.
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:  # a chunked upload (no Content-Length) that grew past the limit
            response = service_error_response(scope["path"], self._too_large())
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
