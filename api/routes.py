"""All API routers, gathered for the app."""

from fastapi import APIRouter

from api import demo, observability, openai_compat, sessions, speech, system, tts_socket, voices, xtts_api_server

router = APIRouter()
for area in (speech, openai_compat, tts_socket, xtts_api_server, voices, sessions, system, observability, demo):
    router.include_router(area.router)
