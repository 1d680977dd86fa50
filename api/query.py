"""A query string that does not decode cleanly is refused (422) before the route does any work.

Starlette decodes queries leniently (urllib's `parse_qsl`): a '%' without two hex digits stays as it is and bytes
that are not UTF-8 become U+FFFD, so `GET /xtts-api/tts_stream?text=%zz` would speak "%zz". The raw query is
checked here instead, as a router dependency: it runs after the API-key check and before the route, and its error
goes through the one validation handler, so each API family answers in its own error shape with the parameter
named. Main may add it to every route with `FastAPI(dependencies=[Depends(well_formed_query)])`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection

from services.errors import clipped, echoed

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def query_problem(part: bytes) -> str | None:
    """Why one name or value of a raw query string does not decode, or None if it does."""
    if bad := _BAD_ESCAPE.search(part):
        escape = part[bad.start() : bad.start() + 3].decode("latin-1")
        return f"invalid percent-escape {echoed(escape)}: '%' takes two hex digits (a literal '%' is %25)"
    try:
        unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return "its percent-escapes do not decode as UTF-8 text"
    return None


async def well_formed_query(connection: HTTPConnection) -> None:
    """Raise a 422 (RequestValidationError) naming the first query parameter that does not decode."""
    for pair in connection.scope.get("query_string", b"").split(b"&"):
        name, _, value = pair.partition(b"=")
        problem = query_problem(name) or query_problem(value)
        if problem is not None:
            shown = clipped(unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")) or "query"
            raise RequestValidationError([{"type": "query_escape", "loc": ("query", shown), "msg": problem}])
