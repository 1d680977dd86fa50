"""Refuse request bodies over MAX_UPLOAD_MB with 413 without reading the rest."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.errors import PayloadTooLarge


def _too_large_body(limit_bytes: int) -> bytes:
    return json.dumps(
        {
            "error": "payload_too_large",
            "message": f"upload is over MAX_UPLOAD_MB ({limit_bytes / 1e6:g} MB)",
            "details": {"limit_bytes": limit_bytes},
        }
    ).encode()


class UploadLimitMiddleware:
    """Pure ASGI (so streaming responses stay untouched): checks Content-Length, then counts bytes."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit_bytes:
            return await self._refuse(send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise PayloadTooLarge(f"upload is over MAX_UPLOAD_MB ({self.limit_bytes / 1e6:g} MB)")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Send) -> None:
        body = _too_large_body(self.limit_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
