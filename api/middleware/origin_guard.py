"""Which web pages may change anything: a state-changing request from a page that is neither allowed
(CORS_ALLOW_ORIGINS) nor the server's own is 403, and so is its WebSocket handshake.

The rule, for every request but GET, HEAD and OPTIONS, and for every WebSocket handshake:
- no `Origin` header: allowed. Browsers send one with every such request (same-origin ones too), so this is
  curl, an SDK or another server; API keys, not this guard, decide about them.
- the `Origin` is in CORS_ALLOW_ORIGINS (or the list is `*`): allowed.
- the `Origin` is the server's own: its host is one of the allowed hosts (ALLOWED_HOSTS, with the loopback
  names and HOST) and its host and port are the ones the request was sent to (`Host`): allowed. This is the
  /demo page, served by the server itself.
- anything else (another port counts, `null` too): 403.

`Host` alone proves nothing: after DNS rebinding, a page on `attacker.example` sends both `Origin:
http://attacker.example:8000` and `Host: attacker.example:8000`, and the two agree. The allowed-hosts check
(api/middleware/allowed_hosts.py) refuses that request before it gets here; the guard does not lean on it and
asks for an allowed host itself. With ALLOWED_HOSTS=* every host is allowed, so such a page passes (as the
start-up warning says).

The guard matters without CORS too: a multipart or text/plain POST is a "simple" request that a browser
sends cross-site without asking, so any page a user visits could otherwise overwrite their saved voices on
a localhost or LAN server.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import service_error_response
from api.middleware.allowed_hosts import HostNames, split_host
from services.errors import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_host(origin: str) -> tuple[str, int | None] | None:
    """An http(s) origin's (canonical host, port or None for the scheme's default); None for `null` and the rest."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in DEFAULT_PORTS or parts.path or parts.query or parts.username is not None:
        return None
    host = split_host(parts.netloc)
    if host is None:
        return None
    return host[0], None if port == DEFAULT_PORTS[parts.scheme.lower()] else port


class OriginGuardMiddleware:
    """Pure ASGI: refuses (403) a state-changing request whose Origin is neither allowed nor the server's own."""

    def __init__(self, app: ASGIApp, origins: list[str], hosts: HostNames) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A WebSocket starts generation: a foreign page must not open one either (cross-site WebSocket hijacking).
        websocket = scope["type"] == "websocket"
        plain_read = scope["type"] == "http" and scope["method"] in SAFE_METHODS
        if self.any_origin or plain_read or scope["type"] not in {"http", "websocket"}:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1").strip()
        if not origin or origin in self.origins or self._own_origin(origin, headers.get(b"host", b"")):
            return await self.app(scope, receive, send)
        if websocket:
            return await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
        refused = Forbidden(
            f"a {scope.get('method')} from a page on {origin[:100]} is refused: add the origin to "
            "CORS_ALLOW_ORIGINS to let that page change things here",
            origin=origin[:100],
        )
        await service_error_response(scope["path"], refused)(scope, receive, send)

    def _own_origin(self, origin: str, host_header: bytes) -> bool:
        """The page is the server's own: an allowed host, and the very host and port the request went to."""
        page = origin_host(origin)
        if page is None or not self.hosts.allows(page[0]):
            return False
        served = split_host(host_header.decode("latin-1"))
        return served is not None and served == page


def guard_writes(app: FastAPI, origins: list[str], hosts: HostNames) -> None:
    """Add the origin guard (inside CORS, which answers preflights first)."""
    app.add_middleware(OriginGuardMiddleware, origins=origins, hosts=hosts)
