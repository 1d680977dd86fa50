"""Cross-origin access for web pages on other origins: CORS_ALLOW_ORIGINS, answered by Starlette's middleware."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

logger = logging.getLogger(__name__)

# Response headers a page's script may read: what the speech routes say about a stream, and 429's wait.
EXPOSED_HEADERS = ["X-Session-ID", "X-Seed", "X-Sample-Rate", "X-Language", "Retry-After", "Content-Disposition"]


def allow_origins(app: FastAPI, origins: list[str]) -> None:
    """Let pages from `origins` call every route (preflights included); none by default.

    Add it last, so it is the outermost middleware: errors from the ones inside (413, 429) then carry
    the CORS headers too, and a page can read them.
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
