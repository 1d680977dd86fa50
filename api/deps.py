"""Typed dependencies: routes get the app's services from here, never from module globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from config import Settings
from services.admission import AdmissionGate
from services.cache import SpeakerCache
from services.errors import NotReady
from services.sessions import SessionRegistry
from services.speech import SpeechService
from services.tts import TTSEngine
from services.voices import VoiceService


def _ready(request: Request, name: str) -> object:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReady(f"the model is {request.app.state.status}; try again shortly")
    return value


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_engine(request: Request) -> TTSEngine:
    return _ready(request, "engine")  # type: ignore[return-value]


def get_speech(request: Request) -> SpeechService:
    return _ready(request, "speech")  # type: ignore[return-value]


def get_voices(request: Request) -> VoiceService:
    return _ready(request, "voices")  # type: ignore[return-value]


def get_sessions(request: Request) -> SessionRegistry:
    return request.app.state.sessions  # type: ignore[no-any-return]


def get_gate(request: Request) -> AdmissionGate:
    return request.app.state.gate  # type: ignore[no-any-return]


def get_cache(request: Request) -> SpeakerCache:
    return request.app.state.cache  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[TTSEngine, Depends(get_engine)]
SpeechDep = Annotated[SpeechService, Depends(get_speech)]
VoicesDep = Annotated[VoiceService, Depends(get_voices)]
SessionsDep = Annotated[SessionRegistry, Depends(get_sessions)]
GateDep = Annotated[AdmissionGate, Depends(get_gate)]
CacheDep = Annotated[SpeakerCache, Depends(get_cache)]
