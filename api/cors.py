"""Web pages on other origins: CORS_ALLOW_ORIGINS says which may call the server (Starlette's CORS middleware)
and, with the same list, which may change anything: a state-changing request from any other page is 403.

The guard matters without CORS too: a multipart or text/plain POST is a "simple" request that a browser
sends cross-site without asking, so any page a user visits could otherwise overwrite their saved voices on
a localhost or LAN server."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import service_error_response
from services.errors import Forbidden

logger = logging.getLogger(__name__)

# Response headers a page's script may read: what the speech routes say about a stream, 429's wait, and
# which replica answered (cluster/).
EXPOSED_HEADERS = [
    "X-Session-ID", "X-Seed", "X-Sample-Rate", "X-Language", "Retry-After", "Content-Disposition", "X-Replica",
]  # fmt: skip


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class OriginGuardMiddleware:
    """Pure ASGI: refuses (403) a state-changing request whose Origin is neither allowed nor the server's own."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A WebSocket starts generation: a foreign page must not open one either (cross-site WebSocket hijacking).
        websocket = scope["type"] == "websocket"
        plain_read = scope["type"] == "http" and scope["method"] in SAFE_METHODS
        if self.any_origin or plain_read or scope["type"] not in {"http", "websocket"}:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1").strip()
        if not origin or origin in self.origins or self._same_origin(origin, headers):
            return await self.app(scope, receive, send)
        if websocket:
            return await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
        refused = Forbidden(
            f"a {scope.get('method')} from a page on {origin} is refused: add the origin to CORS_ALLOW_ORIGINS "
            "to let that page change things here",
            origin=origin,
        )
        await service_error_response(scope["path"], refused)(scope, receive, send)

    @staticmethod
    def _same_origin(origin: str, headers: dict[bytes, bytes]) -> bool:
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        try:
            return bool(host) and urlsplit(origin).netloc.lower() == host
        except ValueError:
            return False


def guard_writes(app: FastAPI, origins: list[str]) -> None:
    """Add the origin guard (inside CORS, which answers preflights first)."""
    app.add_middleware(OriginGuardMiddleware, origins=origins)


def allow_origins(app: FastAPI, origins: list[str]) -> None:
    """Let pages from `origins` call every route (preflights included); none by default.

    Add it last, so it is the outermost middleware: errors from the ones inside (413, 429) then carry
    the CORS headers too, and a page can read them.
    """
    if not origins:
        return
    if "*" in origins:
        logger.warning(
            "CORS_ALLOW_ORIGINS=*: any web page a visitor opens may call this server from their browser; "
            "list the origins that need it instead"
        )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
