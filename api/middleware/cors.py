"""Web pages on other origins that may call the server: CORS_ALLOW_ORIGINS, through Starlette's CORS middleware.

The same list says which pages may change anything (api/middleware/origin_guard.py).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

logger = logging.getLogger(__name__)

# Response headers a page's script may read: what the speech routes say about a stream, 429's wait, and
# which replica answered (cluster/).
EXPOSED_HEADERS = [
    "X-Session-ID", "X-Seed", "X-Sample-Rate", "X-Language", "Retry-After", "Content-Disposition", "X-Replica",
]  # fmt: skip


def allow_origins(app: FastAPI, origins: list[str]) -> None:
    """Let pages from `origins` call every route (preflights included); none by default.

    Added after every middleware but the allowed-hosts check, so errors from the ones inside (403, 413, 429)
    carry the CORS headers too, and a page can read them.
    """
    if not origins:
        return
    if "*" in origins:
        logger.warning(
            "CORS_ALLOW_ORIGINS=*: any web page a visitor opens may call this server from their browser; "
            "list the origins that need it instead"
        )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
