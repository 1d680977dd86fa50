"""Every HTTP request counted by method, route template and status (the xtts_http_requests metric)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.state import app_state

# Label values come from closed sets only: a client choosing the method or path must not add series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestCountMiddleware:
    """Pure ASGI (streams pass untouched): counts requests by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"  # the route's template, never the raw path
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            state = app_state(scope["app"])
            if state is not None:
                state.metrics.requests.labels(method, path, str(status)).inc()
