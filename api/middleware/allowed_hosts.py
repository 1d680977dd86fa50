"""The host names this server answers to (ALLOWED_HOSTS): the guard against DNS rebinding.

DNS rebinding: a page on a name the attacker controls (`http://attacker.example:8000`) re-points that name to
127.0.0.1 (or a LAN address); the visitor's browser then sends the page's requests to this server and treats
the answers as same-origin, so the page reads and writes as if it were the server's own. Every such request
still names the attacker's host in `Host` (a browser sends the name of the URL it fetches, and a rebound name
is not ours), so a server that answers only for its own names refuses them all.

Checked on every HTTP request and WebSocket handshake, before anything else: a refused request gets 400
`host_not_allowed` (our error shape, OpenAI's under /v1/), a refused handshake is closed before it is accepted
(the client sees 403), as the origin guard and the API keys refuse sockets. A request without `Host`, with two,
or with one that is not a host[:port] is refused too. Names match without the port, case-insensitively and
without a trailing dot; addresses match in their canonical form, so `[::1]`, `::1` and `[0:0::1]` are one.

Starlette's TrustedHostMiddleware does this check too, but answers in plain text (not our error shape, not
OpenAI's under /v1/), compares IPv6 literals as written (`[::1]`, never `::1` or another spelling), redirects to
`www.` names, and says nothing in the log; the class here is as small and shares its name matching with the
origin guard, which must also know which hosts are ours.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import service_error_response
from config import EVERY_INTERFACE, LOOPBACK_HOSTS
from services.errors import HostNotAllowed

logger = logging.getLogger(__name__)

ANY_HOST = "*"
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_PORT = re.compile(r"[0-9]{1,5}")
SHOWN_CHARS = 100  # of a refused Host, in the answer and the log
LOGGED_HOSTS = 32  # distinct refused names logged (a warning each); then no more


def canonical_name(name: str) -> str | None:
    """A host name or address as compared: lower case, no trailing dot, no brackets, an address canonical.
    None when it is neither a name nor an address."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    name = name.removesuffix(".")
    return name if _NAME.fullmatch(name) else None


def split_host(value: str) -> tuple[str, int | None] | None:
    """A `Host` header's value (or an origin's host[:port]) as (canonical name, port or None); None when
    it is not one."""
    value = value.strip()
    if value.startswith("["):  # an IPv6 literal, [::1] or [::1]:8000
        name, bracket, port = value[1:].partition("]")
        if not bracket:
            return None
    elif value.count(":") > 1:  # a bare IPv6 literal (no browser sends one; some clients do)
        name, port = value, ""
    else:
        name, colon, number = value.partition(":")
        port = colon + number
    if port and not (port.startswith(":") and _PORT.fullmatch(port[1:]) and int(port[1:]) <= 65535):
        return None
    canonical = canonical_name(name)
    if canonical is None or (value.startswith("[") and ":" not in canonical):  # brackets hold IPv6 only
        return None
    return canonical, int(port[1:]) if port else None


@dataclass(frozen=True)
class HostNames:
    """The names and addresses requests may name in `Host`; `any_host` with ALLOWED_HOSTS=*."""

    names: frozenset[str]
    any_host: bool = False

    @classmethod
    def of(cls, entries: Iterable[str]) -> HostNames:
        entries = [entry.strip() for entry in entries if entry.strip()]
        names = frozenset(name for name in map(canonical_name, entries) if name is not None)
        return cls(names=names, any_host=ANY_HOST in entries)

    def allows(self, name: str) -> bool:
        """Whether `name` (canonical, as `split_host` gives it) is one of ours."""
        return self.any_host or name in self.names

    def shown(self) -> str:
        return ANY_HOST if self.any_host else ", ".join(sorted(f"[{n}]" if ":" in n else n for n in self.names))


class AllowedHostsMiddleware:
    """Pure ASGI: refuses a request or handshake whose `Host` is not one of `hosts`."""

    def __init__(self, app: ASGIApp, hosts: HostNames) -> None:
        self.app = app
        self.hosts = hosts
        self._logged: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hosts.any_host or scope["type"] not in {"http", "websocket"}:
            return await self.app(scope, receive, send)
        given = [value.decode("latin-1") for name, value in scope["headers"] if name == b"host"]
        host = split_host(given[0]) if len(given) == 1 else None
        if host is not None and self.hosts.allows(host[0]):
            return await self.app(scope, receive, send)
        refused = self._refusal(given, scope)
        if scope["type"] == "websocket":  # refused before the handshake completes (the client sees 403)
            return await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
        await service_error_response(scope["path"], refused)(scope, receive, send)

    def _refusal(self, given: list[str], scope: Scope) -> HostNotAllowed:
        if not given:
            return HostNotAllowed("the request has no Host header")
        if len(given) > 1:
            return HostNotAllowed("the request has more than one Host header")
        shown = given[0][:SHOWN_CHARS]
        if shown not in self._logged and len(self._logged) < LOGGED_HOSTS:
            self._logged.add(shown)
            logger.warning(
                "refused a request for Host %r (%s %s): if clients reach this server by that name, add it to "
                "ALLOWED_HOSTS (this server answers to %s)",
                shown, scope.get("method", "WEBSOCKET"), scope["path"][:SHOWN_CHARS], self.hosts.shown(),
            )  # fmt: skip
        return HostNotAllowed(
            f"this server does not answer to the host {shown!r}: if it is reached by that name, add the name "
            "to its ALLOWED_HOSTS",
            host=shown,
        )


def check_hosts(app: FastAPI, hosts: HostNames, bind_host: str) -> None:
    """Add the check (the outermost middleware), and say at start-up what it lets through.

    Bound to every interface (HOST=0.0.0.0 or ::), the server is reached by names and addresses it cannot
    know: unless ALLOWED_HOSTS lists them, only the loopback names work, and the log says what to set."""
    if hosts.any_host:
        logger.warning(
            "ALLOWED_HOSTS=*: requests for any host name are answered, so DNS rebinding is no longer guarded: "
            "a web page on a name its owner re-points to this machine can use this server from a visitor's "
            "browser (and, without API keys, delete its voices); list the names clients use instead"
        )
    elif bind_host in EVERY_INTERFACE and hosts.names <= HostNames.of(LOOPBACK_HOSTS).names:
        logger.warning(
            "listening on %s: only requests for %s are answered (others get 400 host_not_allowed); set "
            "ALLOWED_HOSTS to the names and addresses clients reach this server by, e.g. "
            "ALLOWED_HOSTS=tts.lan,192.168.1.20 (see README, DNS rebinding)", bind_host, hosts.shown(),
        )  # fmt: skip
    else:
        logger.info("answering requests for the hosts %s (ALLOWED_HOSTS)", hosts.shown())
    app.add_middleware(AllowedHostsMiddleware, hosts=hosts)
