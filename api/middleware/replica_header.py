"""As one replica of several (cluster/): every response says which replica answered (X-Replica)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ReplicaHeaderMiddleware:
    """Pure ASGI (streams pass untouched): adds X-Replica to every response's headers."""

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
