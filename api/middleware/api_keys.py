"""Who is calling: API keys (API_KEYS, API_KEYS_FILE, ADMIN_API_KEYS), checked before any route runs.

Routes read the caller it sets through `api.deps.CallerDep`.

Keys come as `Authorization: Bearer <key>` (what OpenAI's clients send), `X-API-Key: <key>` or `xi-api-key: <key>`
(ElevenLabs' clients: Pipecat, LiveKit). They are
compared in constant time, and only a key's id (a hash prefix) is ever kept, shown or logged: it names
the owner of the sessions a key starts.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import service_error_response
from services.errors import Unauthorized


@dataclass(frozen=True)
class Caller:
    """The one calling: `key_id` is None when keys are off (then everyone may do everything)."""

    key_id: str | None
    admin: bool


LOCAL_CALLER = Caller(key_id=None, admin=True)
ALWAYS_OPEN = frozenset({"/health", "/ready"})
DOCS_PATHS = ("/", "/openapi.json", "/docs/oauth2-redirect", "/static-offline-docs/")
METRICS_PATH = "/metrics"


def key_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _matches(presented: bytes, keys: Iterable[bytes]) -> bool:
    # every key is compared (no early exit), each in constant time
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, key)
    return found


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    api_key = api_key or headers.get(b"xi-api-key", b"").decode("latin-1").strip()  # ElevenLabs' clients
    return api_key or None


class ApiKeyMiddleware:
    """Pure ASGI: sets `scope["state"]["caller"]`, or answers 401 (with WWW-Authenticate) on its own."""

    def __init__(
        self, app: ASGIApp, keys: frozenset[str], admin_keys: frozenset[str], is_open: Callable[[str], bool]
    ) -> None:
        self.app = app
        self.keys = [key.encode() for key in sorted(keys)]
        self.admin_keys = [key.encode() for key in sorted(admin_keys)]
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        if not self.keys:
            state["caller"] = LOCAL_CALLER
            return await self.app(scope, receive, send)
        key = presented_key(dict(scope["headers"]))
        if key is not None and _matches(key.encode(), self.keys):
            state["caller"] = Caller(key_id=key_id(key), admin=_matches(key.encode(), self.admin_keys))
        elif self.is_open(scope["path"]) and scope["type"] == "http":
            state["caller"] = Caller(key_id=None, admin=False)
        elif scope["type"] == "websocket":  # refused before the handshake completes (the client sees 403)
            return await send({"type": "websocket.close", "code": 1008, "reason": "API key needed"})
        else:
            message = "this server needs an API key: Authorization: Bearer <key>, or X-API-Key: <key>"
            if key is not None:
                message = "that API key is not one of this server's keys"
            return await service_error_response(scope["path"], Unauthorized(message))(scope, receive, send)
        await self.app(scope, receive, send)


def open_paths(metrics_need_key: bool, docs_need_key: bool) -> Callable[[str], bool]:
    """Which paths answer without a key: /health and /ready always, the docs and /metrics as configured."""

    def is_open(path: str) -> bool:
        if path in ALWAYS_OPEN or (path == METRICS_PATH and not metrics_need_key):
            return True
        return not docs_need_key and (path in DOCS_PATHS or path.startswith("/static-offline-docs/"))

    return is_open
