"""GET /demo: a plain HTML page to type, clone, listen while it streams, and cancel."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.errors import ERROR_RESPONSES

router = APIRouter(tags=["demo"], responses=ERROR_RESPONSES)
_PAGE = Path(__file__).parent / "static" / "demo.html"


@lru_cache(maxsize=1)
def _page() -> str:
    return _PAGE.read_text(encoding="utf-8")


@router.get("/demo", response_class=HTMLResponse, summary="Browser demo page")
async def demo() -> HTMLResponse:
    return HTMLResponse(_page())
