"""Server settings, read once from environment variables (and an optional .env file)."""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import psutil
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The names a browser on this machine uses for it: a page cannot re-point them (see ALLOWED_HOSTS).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
EVERY_INTERFACE = frozenset({"0.0.0.0", "::", "[::]", ""})  # HOST values that bind every interface
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _is_host(entry: str) -> bool:
    """A host name or an IP address (IPv6 with or without brackets): no scheme, port or path."""
    try:
        ipaddress.ip_address(entry.removeprefix("[").removesuffix("]"))
        return True
    except ValueError:
        return bool(_HOST_NAME.fullmatch(entry))


def _physical_cores() -> int:
    """Cores this process may use, not counting SMT siblings: torch's kernels lose speed on hyperthreads."""
    try:
        allowed = len(os.sched_getaffinity(0))  # respects container CPU pinning, unlike os.cpu_count()
    except AttributeError:  # pragma: no cover - non-Linux
        allowed = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or allowed
    return max(1, min(allowed, physical))


class Settings(BaseSettings):
    """Every setting of the server; field names are the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    HOST: str = "127.0.0.1"
    """Interface uvicorn binds to: loopback by default; `0.0.0.0` for containers and the LAN (set API_KEYS and
    ALLOWED_HOSTS)."""
    PORT: int = Field(8000, ge=1, le=65535)
    """TCP port uvicorn listens on."""
    WYOMING_PORT: int | None = Field(None, ge=1, le=65535)
    """TCP port for the Wyoming protocol (Home Assistant) on HOST, beside HTTP; unset: no Wyoming server. It has no
    authentication."""
    WYOMING_ZEROCONF: bool = False
    """Advertise the Wyoming server on the LAN by mDNS (`_wyoming._tcp.local.`) so Home Assistant discovers it."""
    DEBUG: bool = False
    """Debug logging, including per-chunk timings."""
    NUM_THREADS: int = Field(default_factory=_physical_cores, ge=1, le=1024)
    """Threads torch uses (defaults to the physical cores this process may run on)."""
    MAX_CONCURRENT_REQUESTS: int = Field(10, ge=1, le=1000)
    """Synthesis requests admitted at once (they decode together, up to MAX_BATCH_SIZE at a time)."""
    MAX_BATCH_SIZE: int | None = Field(None, ge=1, le=256)
    """Streams decoded together in one batched GPT step (default: MAX_CONCURRENT_REQUESTS, at most 8 on the
    CPU and 32 on a GPU); admitted streams beyond it wait for a place in the batch."""
    STREAM_BUFFER_SECONDS: float = Field(10.0, gt=0, le=3600)
    """Seconds of audio a stream may make ahead of its client; then it pauses until the client reads."""
    MAX_QUEUE_SIZE: int = Field(32, ge=0, le=10000)
    """Requests that may wait for a slot once all are taken; more get 429."""
    QUEUE_TIMEOUT: float = Field(30.0, gt=0, le=3600)
    """Seconds a request may wait in the queue before it gets 429."""
    SHUTDOWN_TIMEOUT: float = Field(30.0, ge=0, le=3600)
    """Seconds running streams may take to finish on SIGTERM before they are cancelled."""
    CUSTOM_MODEL_PATH: Path | None = None
    """XTTS checkpoint directory (config.json, model.pth, vocab.json, optional speakers_xtts.pth)."""
    USE_CPU: bool = False
    """Run on the CPU even when a GPU is present."""
    DUMMY_MODEL: Literal["tiny", "full"] | None = None
    """Random-weight XTTS for tests (tiny) or benchmarks (full): it makes noise, not speech."""
    GPT_PRECISION: Literal["auto", "float32", "bfloat16", "float16", "int8"] = "auto"
    """Precision of the GPT's transformer weights; auto: int8 on a CPU, float32 on a GPU (see README)."""
    VOCODER_BACKEND: Literal["auto", "torch", "openvino"] = "auto"
    """What runs the HiFi-GAN vocoder; auto: OpenVINO on a CPU, torch on a GPU (see README)."""
    VOCODER_PRECISION: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision the vocoder computes in; auto: bfloat16 where the CPU has AVX-512 BF16 or AMX, else float32 (see
    README)."""
    SPEAKER_CACHE_TTL: float = Field(3600.0, gt=0)
    """Seconds a voice's latents stay in the in-memory cache after their last load."""
    SPEAKER_CACHE_MAX_SIZE: int = Field(100, ge=1, le=100000)
    """Voices whose latents the cache holds at most (least recently used go first)."""
    PRELOAD_VOICES: str = ""
    """Comma-separated saved voices or built-in speakers to load into the cache at start."""
    VOICES_DIR: Path = Path("./saved_voices")
    """Folder where saved voices are kept (one .safetensors file per voice)."""
    DATA_DIR: Path | None = None
    """Folder of long-form jobs: their SQLite database and audio (unset: `data` beside VOICES_DIR)."""
    MAX_JOB_CHARS: int = Field(1_000_000, ge=1, le=20_000_000)
    """Characters of speakable text one long-form job may have (a 180,000-word book is about 1,000,000)."""
    MAX_ACTIVE_JOBS: int = Field(5, ge=1, le=10_000)
    """Long-form jobs one caller (API key) may have queued or running at once."""
    JOB_ROWS: int | None = Field(None, ge=1, le=256)
    """Sentences of long-form jobs decoded at once, in the batch rows live speech leaves (default: the batch's
    size)."""
    REFERENCE_AUDIO_DIR: Path | None = None
    """Folder whose audio files requests may name by path (`audio_file_path`, as the seed's clients send it);
    unset: any path is refused (403). Paths resolving outside it (symlinks, `..`) are refused too."""
    MAX_TEXT_LENGTH: int = Field(5000, ge=1, le=1_000_000)
    """Characters one request's text may have."""
    MAX_UPLOAD_MB: float = Field(20.0, gt=0, le=1024)
    """Megabytes a cloning upload may have, all files together."""
    MAX_CLONE_FILES: int = Field(10, ge=1, le=1000)
    """Reference files one /clone_speaker request may send."""
    MAX_CLONE_SECONDS: float = Field(300.0, gt=0, le=36000)
    """Reference seconds one clone may decode: files x max_ref_length must stay within it."""
    STREAM_FIRST_CHUNK_TOKENS: int = Field(1, ge=1, le=200)
    """GPT tokens of audio in a sentence's first chunk (it also waits ~3 tokens of lookahead for seamless
    decoding); later chunks double up to stream_chunk_size."""
    DEFAULT_LANGUAGE: str = "en"
    """Language for /v1/audio/speech when the request has none and detection is unsure."""
    OPENAI_VOICE_MAP: str = ""
    """OpenAI voice names to voices, e.g. `alloy=my-voice,echo=Claribel Dervla`."""
    OPENAI_DEFAULT_VOICE: str = ""
    """Voice for OpenAI voice names not in OPENAI_VOICE_MAP (default: the first built-in speaker)."""
    MAX_AUDIO_TOKENS: int | None = Field(None, ge=8, le=10000)
    """Cap on GPT audio tokens per sentence (~46 ms each; XTTS v2 allows 602): stops runaway generations."""
    SESSION_HISTORY_SIZE: int = Field(1000, ge=1, le=1_000_000)
    """Finished stream sessions kept for /stream_status."""
    SESSION_HISTORY_TTL: float = Field(3600.0, gt=0)
    """Seconds a finished stream session stays visible in /stream_status."""
    API_KEYS: str = ""
    """Comma-separated keys a request must carry (Authorization: Bearer or X-API-Key); empty: no keys needed."""
    API_KEYS_FILE: Path | None = None
    """A file of more keys, one per line (# comments)."""
    ADMIN_API_KEYS: str = ""
    """Comma-separated keys that may also delete and overwrite voices, clear the cache, and read or cancel anyone's
    sessions."""
    METRICS_NEED_KEY: bool = True
    """With keys on, /metrics needs a key too."""
    DOCS_NEED_KEY: bool = False
    """With keys on, the Swagger UI and /openapi.json need a key too."""
    WS_IDLE_TIMEOUT: float = Field(60.0, gt=0, le=86400)
    """Seconds a /v1/tts/ws socket may stay silent (no message, nothing being spoken) before it is closed."""
    WS_MAX_WAIT_SECONDS: float = Field(1.5, gt=0, le=60)
    """Seconds /v1/tts/ws lets text without sentence-final punctuation wait before speaking it anyway."""
    WS_PING_INTERVAL: float = Field(20.0, gt=0, le=3600)
    """Seconds between the keep-alive pings the server sends each WebSocket."""
    WS_PING_TIMEOUT: float = Field(20.0, gt=0, le=3600)
    """Seconds a WebSocket client may leave a ping unanswered while its TCP acknowledges nothing either; then it
    is gone: closed, its work cancelled. A client that is there but not reading is paused, not closed."""
    HEADER_TIMEOUT: float = Field(10.0, gt=0, le=600)
    """Seconds a client may take to send a request's line and headers; slower connections are closed."""
    CORS_ALLOW_ORIGINS: str = ""
    """Comma-separated origins whose web pages may call the server (e.g. `http://localhost:8000`); `*` for any."""
    ALLOWED_HOSTS: str = ""
    """Comma-separated host names and addresses clients reach the server by, matched without the port, beyond
    the loopback names and HOST (always allowed); a request for any other `Host` gets 400, which defeats DNS
    rebinding. `*` turns the check off."""

    @field_validator(
        "CUSTOM_MODEL_PATH", "DUMMY_MODEL", "MAX_AUDIO_TOKENS", "API_KEYS_FILE", "REFERENCE_AUDIO_DIR", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("API_KEYS_FILE")
    @classmethod
    def _readable_keys_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("not a readable file")
        return value

    @field_validator("REFERENCE_AUDIO_DIR")
    @classmethod
    def _existing_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("not a folder")
        return value

    @field_validator("ALLOWED_HOSTS")
    @classmethod
    def _host_names(cls, value: str) -> str:
        for entry in (entry.strip() for entry in value.split(",")):
            if entry and entry != "*" and not _is_host(entry):
                raise ValueError(f"{entry[:100]!r} is not a host name or address (no scheme, port or path)")
        return value

    @property
    def openai_voice_map(self) -> dict[str, str]:
        """OPENAI_VOICE_MAP as a dict."""
        pairs = (item.split("=", 1) for item in self.OPENAI_VOICE_MAP.split(",") if "=" in item)
        return {name.strip().lower(): voice.strip() for name, voice in pairs if name.strip() and voice.strip()}

    def api_keys(self) -> tuple[frozenset[str], frozenset[str]]:
        """(keys that may call the API, of them the admin keys); both empty when keys are off.

        Raises ValueError naming API_KEYS_FILE when it cannot be read (start-up stops there).
        """
        keys = {key.strip() for key in self.API_KEYS.split(",") if key.strip()}
        admin = {key.strip() for key in self.ADMIN_API_KEYS.split(",") if key.strip()}
        if self.API_KEYS_FILE is not None:
            try:
                lines = self.API_KEYS_FILE.read_text().splitlines()
            except OSError as error:
                raise ValueError(f"API_KEYS_FILE={self.API_KEYS_FILE}: {error.strerror}") from None
            keys |= {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
        return frozenset(keys | admin), frozenset(admin)

    @property
    def cors_allow_origins(self) -> list[str]:
        """CORS_ALLOW_ORIGINS as a list, blanks and trailing slashes dropped (browsers send none)."""
        return [origin.strip().rstrip("/") for origin in self.CORS_ALLOW_ORIGINS.split(",") if origin.strip()]

    @property
    def allowed_hosts(self) -> list[str]:
        """The hosts requests may name: `["*"]` for any; otherwise the loopback names, HOST unless it binds
        every interface, and ALLOWED_HOSTS."""
        listed = [entry.strip() for entry in self.ALLOWED_HOSTS.split(",") if entry.strip()]
        if "*" in listed:
            return ["*"]
        bound = [] if self.HOST.strip() in EVERY_INTERFACE else [self.HOST.strip()]
        return list(dict.fromkeys([*LOOPBACK_HOSTS, *bound, *listed]))

    @property
    def data_dir(self) -> Path:
        return self.DATA_DIR if self.DATA_DIR is not None else self.VOICES_DIR.parent / "data"

    @property
    def preload_voice_ids(self) -> list[str]:
        """PRELOAD_VOICES as a list, blanks dropped."""
        return [name.strip() for name in self.PRELOAD_VOICES.split(",") if name.strip()]


def describe_settings_error(error: ValidationError) -> str:
    """One line naming each bad variable, for a start-up failure."""
    parts = []
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "settings"
        given = problem.get("input")
        parts.append(f"{name}={given!r}: {problem['msg']}")
    return "Invalid configuration: " + "; ".join(parts)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
