"""Start the server: `python run.py` (settings from the environment, see README)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from types import FrameType

import h11
import uvicorn
from pydantic import ValidationError
from uvicorn.protocols.http.h11_impl import H11Protocol

from config import Settings, describe_settings_error


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for a request's line and headers (HEADER_TIMEOUT).

    uvicorn times out idle keep-alive connections, but not one that sends its headers a byte at a time
    (slowloris): each would hold a connection and its memory forever. The clock starts when a connection
    opens or a new request begins, and stops once h11 has the whole head.
    """

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout_s, self._head_too_slow
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiting_for_head = self.conn.their_state is h11.IDLE
        if not waiting_for_head and self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        elif waiting_for_head and self._head_deadline is None and data:
            # a kept-alive connection began its next request: its head gets the same deadline
            self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closed a connection whose request head took over %.0f s", self.header_timeout_s)
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[H11Protocol]:
    return type("HeaderTimeoutH11", (HeaderTimeoutH11Protocol,), {"header_timeout_s": seconds})


class _DrainingServer(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT the app stops admitting streams before connections close."""

    def __init__(self, config: uvicorn.Config, begin_draining: Callable[[], None]) -> None:
        super().__init__(config)
        self._begin_draining = begin_draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._begin_draining()
        super().handle_exit(sig, frame)


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return 2
    from api.state import app_state
    from main import create_app

    server: uvicorn.Server | None = None

    def request_exit() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, request_exit=request_exit)

    def begin_draining() -> None:
        if (state := app_state(app)) is not None:
            state.begin_draining()

    config = uvicorn.Config(
        app,
        host=settings.HOST,
        port=settings.PORT,
        log_level="debug" if settings.DEBUG else "info",
        timeout_graceful_shutdown=int(settings.SHUTDOWN_TIMEOUT),
        http=protocol_with_header_timeout(settings.HEADER_TIMEOUT),
    )
    server = _DrainingServer(config, begin_draining)
    server.run()
    state = app_state(app)
    return 1 if state is not None and state.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
