"""GET /metrics (the middleware that counts every request by route and status: api/middleware/request_counting.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import StateDep
from api.errors import ERROR_RESPONSES

router = APIRouter(tags=["server"], responses=ERROR_RESPONSES)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(state: StateDep) -> Response:
    """As one replica of several, every series has a `replica` label and the other replicas' series come
    with this one's, so one scrape through the router sees them all."""
    peer_texts = [text for text in await state.peers.ask("metrics", ()) if isinstance(text, str)]
    return Response(state.metrics.render(peer_texts), media_type=CONTENT_TYPE_LATEST)
