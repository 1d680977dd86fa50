"""Start the server: `python run.py` (settings from the environment, see README)."""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import struct
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from config import Settings, describe_settings_error

if TYPE_CHECKING:
    from services.engine.protocol import Engine


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


class PatientWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, with a keep-alive that tells a client that is not reading from one that is gone,
    and a shutdown that lets the app close its sockets itself.

    Keep-alive: uvicorn closes a socket (1011) whose ping goes unanswered for WS_PING_TIMEOUT. But a client that
    stops reading cannot answer: its library stops taking frames from the connection once some are queued unread
    (websockets: 16), and the ping waits behind the audio. Here, an unanswered ping closes the socket only if the
    client's TCP has also acknowledged nothing for WS_PING_TIMEOUT while something was outstanding (data, a ping or
    a window probe), checked twice a second apart: its network or machine is gone. A client whose TCP still
    acknowledges is there and only not reading: its stream pauses by backpressure (STREAM_BUFFER_SECONDS), however
    long. Without TCP_INFO (not Linux) it is uvicorn's rule.

    Shutdown: uvicorn closes every socket with 1012 as it begins to shut down; here the app does, once the segment
    it is playing has ended (api/tts_socket.py watches the drain), within timeout_graceful_shutdown. If that runs
    out first, uvicorn cancels the app and the socket still closes with 1012.
    """

    recheck_s = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shutting_down = False
        self._suspect = False  # one check found the peer's TCP silent; a second decides
        app = self.app

        async def app_until_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                if not self.shutting_down:
                    raise
                self._close(1012, "server shutting down")  # the grace ran out before the app closed

        self.app: ASGIApp = app_until_shutdown

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.disconnected:
            self.shutting_down = True  # the app closes it (or app_until_shutdown, when uvicorn cancels the app)
            return
        super().shutdown()

    def handle_pong(self, event: Any) -> None:
        self._suspect = False
        super().handle_pong(event)

    def keepalive_timeout(self) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        silent = tcp_silent_for(self.transport, self.ping_timeout or 0.0)
        if silent is False:  # there, just not reading: wait for the next ping's answer
            self._suspect = False
            self.pong_timer = None
            self.pending_ping_payload = None
            self.schedule_ping()
        elif silent and not self._suspect:  # one look may catch a window probe in flight: look again
            self._suspect = True
            self.pong_timer = self.loop.call_later(self.recheck_s, self.keepalive_timeout)
        else:
            super().keepalive_timeout()

    def _close(self, code: int, reason: str) -> None:
        if not self.close_sent and not self.transport.is_closing():
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True


# struct tcp_info (linux/tcp.h), up to tcpi_last_ack_recv: 8 one-byte fields, then 13 four-byte ones
_TCP_INFO = struct.Struct("=8B13I")
_PROBES, _UNACKED, _LAST_ACK_RECV_MS = 3, 12, 20


def tcp_silent_for(transport: asyncio.BaseTransport, seconds: float) -> bool | None:
    """Whether the peer's TCP has acknowledged nothing for `seconds` although something of ours awaits its answer
    (unacknowledged data, or an unanswered window probe); None where TCP_INFO cannot tell (not Linux)."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = _TCP_INFO.unpack(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size))
    except (OSError, struct.error):
        return None
    awaiting_answer = info[_UNACKED] > 0 or info[_PROBES] > 0
    return awaiting_answer and info[_LAST_ACK_RECV_MS] >= seconds * 1000


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """uvicorn as this server runs it (run.py; tests build their real servers with it too)."""
    return uvicorn.Config(
        app,
        host=settings.HOST,
        port=settings.PORT,
        log_level="debug" if settings.DEBUG else "info",
        # whole seconds up: a socket's own grace (SHUTDOWN_TIMEOUT) ends first, and it closes itself cleanly
        timeout_graceful_shutdown=math.ceil(settings.SHUTDOWN_TIMEOUT),
        http=protocol_with_header_timeout(settings.HEADER_TIMEOUT),
        ws=PatientWebSocketProtocol,
        ws_ping_interval=settings.WS_PING_INTERVAL,
        ws_ping_timeout=settings.WS_PING_TIMEOUT,
    )


class _DrainingServer(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT the app stops admitting streams before connections close."""

    def __init__(self, config: uvicorn.Config, begin_draining: Callable[[], None]) -> None:
        super().__init__(config)
        self._begin_draining = begin_draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._begin_draining()
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:  # a drain is how SIGTERM ends us: exit 0, not re-raised (uvicorn would)
            self._captured_signals.remove(sig)


def serve(settings: Settings, engine: Engine | None = None) -> int:
    """Serve until SIGTERM/SIGINT, draining first; 1 if start-up failed. `engine`: one already made (tests' fake)."""
    from api.state import app_state
    from main import create_app

    server: uvicorn.Server | None = None

    def request_exit() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, engine=engine, request_exit=request_exit)

    def begin_draining() -> None:
        if (state := app_state(app)) is not None:
            state.begin_draining()

    server = _DrainingServer(server_config(app, settings), begin_draining)
    server.run()
    state = app_state(app)
    return 1 if state is not None and state.status == "failed" else 0


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
