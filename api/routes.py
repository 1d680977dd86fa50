"""All API routers, gathered for the app."""

from fastapi import APIRouter

from api import demo, observability, openai_compat, sessions, speech, system, voices

router = APIRouter()
for area in (speech, openai_compat, voices, sessions, system, observability, demo):
    router.include_router(area.router)
