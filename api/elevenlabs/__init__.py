"""ElevenLabs' API as voice-agent frameworks call it: HTTP speech and voices (http.py), WebSocket input streaming
(socket.py), over the wire details both share (wire.py)."""

from fastapi import APIRouter

from api.elevenlabs import http, socket

router = APIRouter()
router.include_router(http.router)
router.include_router(socket.router)
