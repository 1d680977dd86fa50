"""GET /metrics, and the middleware that counts every request by route and status."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import StateDep
from api.errors import ERROR_RESPONSES
from api.state import app_state

router = APIRouter(tags=["server"], responses=ERROR_RESPONSES)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(state: StateDep) -> Response:
    """As one replica of several, every series has a `replica` label and the other replicas' series come
    with this one's, so one scrape through the router sees them all."""
    peer_texts = [text for text in await state.peers.ask("metrics", ()) if isinstance(text, str)]
    return Response(state.metrics.render(peer_texts), media_type=CONTENT_TYPE_LATEST)


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


class ReplicaHeaderMiddleware:
    """As one replica of several: every response says which replica answered (X-Replica)."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.header = (b"x-replica", replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def labelled_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, labelled_send)
