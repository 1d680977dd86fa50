"""The Wyoming server: a TCP listener on HOST:WYOMING_PORT (the `wyoming` package's AsyncTcpServer, a handler per
connection), started and stopped by the app's lifespan, and its mDNS advertisement for Home Assistant's discovery."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import socket
import time

from wyoming.server import AsyncTcpServer
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from api.state import AppState
from api.wyoming.handler import WyomingHandler

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."  # what Home Assistant's wyoming integration browses for
_EVERY_INTERFACE = {"", "0.0.0.0", "::", "[::]"}
DRAIN_POLL_S = 0.1


class WyomingServer:
    """Serves Wyoming beside HTTP with the app's state: the same model, voices, gate, sessions and metrics."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        settings = state.settings
        assert settings.WYOMING_PORT is not None
        self.host = settings.HOST.strip().strip("[]")
        self.port = settings.WYOMING_PORT
        self.handlers: set[WyomingHandler] = set()
        self._server: AsyncTcpServer | None = None
        self._zeroconf: AsyncZeroconf | None = None
        self._drain_deadline: float | None = None  # when requests being spoken must have finished (SIGTERM)
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen (a port that cannot be had stops start-up, as HTTP's would), then advertise if asked to."""
        server = AsyncTcpServer(self.host or "0.0.0.0", self.port)
        try:
            await server.start(self._handler)
        except OSError as error:
            raise RuntimeError(f"WYOMING_PORT: cannot listen on {self.host}:{self.port}: {error}") from error
        self._server = server
        self._watching = asyncio.create_task(self._watch_drain(), name="wyoming drain watch")
        logger.info("Wyoming (Home Assistant) on tcp://%s:%d", self.host or "0.0.0.0", self.port)
        if self.state.settings.WYOMING_ZEROCONF:
            info = service_info(self.port, advertised_address(self.host))
            if ipaddress.ip_address(info.parsed_addresses()[0]).is_loopback:
                logger.warning("WYOMING_ZEROCONF with a loopback HOST: only a Home Assistant here can connect")
            self._zeroconf = AsyncZeroconf()
            await self._zeroconf.async_register_service(info)
            logger.info("Wyoming advertised by mDNS as %s at %s", info.name, info.parsed_addresses())

    async def _watch_drain(self) -> None:
        # A flag polled, not an event awaited: the drain begins in a signal handler (run.py), as for the sockets.
        while self.state.status != "draining":  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_S)
        self._drain_deadline = time.monotonic() + self.state.settings.SHUTDOWN_TIMEOUT

    async def drain(self) -> None:
        """Shutting down: requests being spoken get SHUTDOWN_TIMEOUT from the signal to finish (new ones are refused
        with `not_ready` meanwhile), as HTTP streams do."""
        deadline = self._drain_deadline or time.monotonic() + self.state.settings.SHUTDOWN_TIMEOUT
        pending = [task for handler in self.handlers for task in handler.tasks]
        if pending and deadline > time.monotonic():
            await asyncio.wait(pending, timeout=deadline - time.monotonic())

    async def stop(self) -> None:
        """Stop advertising and listening, and end every connection (their requests are cancelled)."""
        if self._watching is not None:
            self._watching.cancel()
        if self._zeroconf is not None:
            await self._zeroconf.async_unregister_all_services()
            await self._zeroconf.async_close()
            self._zeroconf = None
        if self._server is not None:
            await self._server.stop()  # closes each connection: its handler cancels its work
            self._server = None
        for handler in list(self.handlers):
            await handler.disconnect()

    def _handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WyomingHandler:
        handler = WyomingHandler(reader, writer, self.state, secrets.token_hex(4), forget=self.handlers.discard)
        self.handlers.add(handler)
        return handler


def advertised_address(host: str) -> str:
    """The address Home Assistant should connect to: HOST, or for a wildcard bind the one this machine reaches the
    mDNS group from (as the wyoming package's own servers find it)."""
    if host == "localhost":
        return "127.0.0.1"
    if host not in _EVERY_INTERFACE:
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setblocking(False)
        probe.connect(("224.0.0.251", 1))  # no packet is sent: this only picks the interface
        return str(probe.getsockname()[0])


def service_info(port: int, address: str) -> AsyncServiceInfo:
    """`<name>._wyoming._tcp.local.` at address:port; Home Assistant names the discovered service by `<name>`."""
    name = "xtts-" + (re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()).strip("-") or "server")
    return AsyncServiceInfo(
        SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=port, addresses=[ipaddress.ip_address(address).packed]
    )
