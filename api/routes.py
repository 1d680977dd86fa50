"""All API routers, gathered for the app."""

from fastapi import APIRouter

from api import (
    demo,
    elevenlabs,
    jobs,
    observability,
    openai_compat,
    sessions,
    speech,
    system,
    tts_socket,
    voices,
    xtts_api_server,
)

router = APIRouter()
for area in (
    speech, openai_compat, elevenlabs, tts_socket, xtts_api_server, voices, jobs, sessions, system, observability,
    demo,
):  # fmt: skip
    router.include_router(area.router)
