"""The application's state: one typed object, built by the lifespan, read by the dependencies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import anyio
from cachetools import TTLCache
from pydantic import ValidationError
from starlette.applications import Starlette

from config import Settings
from models.xtts_api import TtsSettings
from services.admission import AdmissionGate
from services.cache import SpeakerCache
from services.client_settings import ClientSettingsFile
from services.engine.protocol import Engine
from services.jobs.service import JobService
from services.metrics import Metrics
from services.peers import Peers, SessionDirectory
from services.sessions import SessionRegistry
from services.speech import SpeechService
from services.voices import VoiceService

ServerStatus = Literal["loading", "ready", "draining", "failed"]


@dataclass(frozen=True)
class ModelServices:
    """What exists once the model has loaded."""

    engine: Engine
    voices: VoiceService
    speech: SpeechService
    studio_speakers_json: bytes
    """/studio_speakers' answer: built once at load (58 speakers of 32x1024 floats take about a second)."""
    jobs: JobService
    """Long-form jobs (their runner starts with the model, and stops before it)."""


@dataclass
class XttsApiState:
    """xtts-api-server's state: the generation settings its clients set (/set_tts_settings; one set per API key,
    so with keys on nobody changes another's; in a file beside the voices, shared by every replica), and the voice
    previews made for its /sample (kept 10 minutes: a re-saved voice's preview may lag that long)."""

    settings_file: ClientSettingsFile
    previews: TTLCache[str, bytes] = field(default_factory=lambda: TTLCache(maxsize=64, ttl=600))

    async def settings_for(self, key_id: str | None) -> TtsSettings:
        values = await anyio.to_thread.run_sync(self.settings_file.read, key_id)
        try:
            return TtsSettings.model_validate(values)
        except ValidationError:  # a hand-edited file: the defaults rather than an error on every request
            return TtsSettings()

    async def change_settings(self, key_id: str | None, changed: dict[str, object]) -> None:
        await anyio.to_thread.run_sync(self.settings_file.update, key_id, changed)


@dataclass
class AppState:
    """Everything the routes use; `model` is None until the model has loaded and warmed up."""

    settings: Settings
    gate: AdmissionGate
    cache: SpeakerCache
    sessions: SessionRegistry
    metrics: Metrics
    peers: Peers
    """The other replicas (NO_PEERS for a server on its own)."""
    directory: SessionDirectory
    """Sessions here or on another replica (/stream_status, /stream_cancel)."""
    xtts_api: XttsApiState
    started_at: float = field(default_factory=time.time)
    status: ServerStatus = "loading"
    failure: str | None = None
    model: ModelServices | None = None

    def begin_draining(self) -> None:
        """Refuse new streams (503) while running ones finish."""
        if self.status != "failed":
            self.status = "draining"
        self.gate.draining = True


def app_state(app: Starlette) -> AppState | None:
    """The state the lifespan built, or None before start-up."""
    state: AppState | None = getattr(app.state, "app_state", None)
    return state


def attach(app: Starlette, state: AppState) -> None:
    app.state.app_state = state
