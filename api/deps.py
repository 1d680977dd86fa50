"""Typed dependencies: routes get the app's services from its one state object, never from globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.middleware.api_keys import LOCAL_CALLER, Caller
from api.state import AppState, ModelServices, XttsApiState, app_state
from config import Settings
from services.admission import AdmissionGate
from services.cache import SpeakerCache
from services.engine.protocol import Engine
from services.errors import Forbidden, NotReady
from services.jobs.service import JobService
from services.peers import SessionDirectory
from services.speech import SpeechService
from services.voices import VoiceService


def get_caller(request: Request) -> Caller:
    """Who calls (set by ApiKeyMiddleware); with keys off, a local caller who may do everything."""
    caller: Caller = getattr(request.state, "caller", LOCAL_CALLER)
    return caller


def require_admin(caller: Caller, action: str) -> None:
    """403 unless the caller may do admin actions (always, with keys off)."""
    if not caller.admin:
        raise Forbidden(f"{action} needs an admin key (ADMIN_API_KEYS)")


def get_state(request: Request) -> AppState:
    state = app_state(request.app)
    if state is None:  # only before the lifespan has run
        raise RuntimeError("the app has not started")
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_model(state: StateDep) -> ModelServices:
    """The loaded model's services; 503 while it loads, or once the server drains."""
    if state.model is None:
        raise NotReady(f"the model is {state.status}; try again shortly", retry_after_s=state.gate.retry_after_s())
    return state.model


ModelDep = Annotated[ModelServices, Depends(get_model)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_engine(model: ModelDep) -> Engine:
    return model.engine


def get_speech(model: ModelDep) -> SpeechService:
    return model.speech


def get_voices(model: ModelDep) -> VoiceService:
    return model.voices


def get_jobs(model: ModelDep) -> JobService:
    return model.jobs


def get_sessions(state: StateDep) -> SessionDirectory:
    """Sessions of this process, or of another replica when the server runs as several."""
    return state.directory


def get_gate(state: StateDep) -> AdmissionGate:
    return state.gate


def get_cache(state: StateDep) -> SpeakerCache:
    return state.cache


def get_xtts_api(state: StateDep) -> XttsApiState:
    return state.xtts_api


CallerDep = Annotated[Caller, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SpeechDep = Annotated[SpeechService, Depends(get_speech)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
VoicesDep = Annotated[VoiceService, Depends(get_voices)]
SessionsDep = Annotated[SessionDirectory, Depends(get_sessions)]
GateDep = Annotated[AdmissionGate, Depends(get_gate)]
CacheDep = Annotated[SpeakerCache, Depends(get_cache)]
XttsApiDep = Annotated[XttsApiState, Depends(get_xtts_api)]
