"""All API routers, gathered for the app."""

from fastapi import APIRouter

from api import sessions, speech, system, voices

router = APIRouter()
for area in (speech, voices, sessions, system):
    router.include_router(area.router)
