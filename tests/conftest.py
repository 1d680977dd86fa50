"""Fixtures: engines (the tiny random-weight model, or a fake), apps in-process, and real uvicorns on 127.0.0.1.

Three kinds of app, cheapest first:
- `app_client(engine, settings)`: the app in-process through Starlette's TestClient (lifespan runs; bodies are
  buffered, so nothing here is about streaming).
- `live_server(engine, settings)`: a real uvicorn on 127.0.0.1 in a thread of this process, for streaming,
  disconnects and timing, with either engine.
- `start_server(tmp_path, **env)`: `python run.py` in a child process, for start-up, signals and the full stack.
"""

from __future__ import annotations

import copy
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient
from TTS.tts.layers.xtts.hifigan_decoder import HifiDecoder
from TTS.tts.models.xtts import Xtts

from config import Settings
from main import create_app
from services.engine import dummy_model
from services.engine.dummy_model import DummySize, build_dummy_xtts
from services.engine.model_loader import LoadedModel, ModelChoice, load_model
from services.engine.protocol import Engine
from services.engine.tts import TTSEngine
from services.engine.vocoder import fold_weight_norm
from tests.fakes import FakeEngine
from tests.layers import require_layer

REPO = Path(__file__).resolve().parent.parent
BUILTIN_SPEAKER = "Dummy Alto"
START_TIMEOUT_S = 180


# HiFi-GAN's channels in the tests' in-process tiny model (XTTS v2 has 512). Every conv keeps its kernel, stride
# and dilation, so the receptive field, frame arithmetic and chunk seams are the real vocoder's; each token costs
# an eighth of the time (the full-size vocoder was most of the engine and app tests' time). The precision bounds
# the README states (tests/test_precision.py) decode with the full-size one (`full_size_vocoder`).
TEST_VOCODER_CHANNELS = 64

# Under pytest-xdist (`make test-fast` runs a worker per core), each worker builds its dummies and temporary files
# in a folder of its own (two workers writing the same dummy files at once could read each other's half-written
# ones), and torch uses one thread per worker (two workers of two threads on two cores slow each other down).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    tempfile.tempdir = str(Path(tempfile.gettempdir()) / f"xdist-{XDIST_WORKER}")
    Path(tempfile.tempdir).mkdir(exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir
TEST_THREADS = 1 if XDIST_WORKER else 2
DUMMY_DIR = Path(tempfile.gettempdir()) / "xtts-dummy"  # where the loader builds its dummies


@functools.cache
def _built_dummy(size: DummySize, work_dir: Path, seed: int) -> Xtts:
    """`build_dummy_xtts`'s model, once a session, its vocoder's weight norm folded as the loader folds it (a
    parametrized module cannot be copied twice)."""
    model = build_dummy_xtts(size, work_dir, seed)
    fold_weight_norm(model.hifigan_decoder)
    return model


@functools.cache
def _narrow_generator(in_channels: int, cond_channels: int, cond_in_each_up_layer: bool, seed: int) -> torch.nn.Module:
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        narrow = HifiDecoder(
            decoder_input_dim=in_channels,
            d_vector_dim=cond_channels,
            cond_d_vector_in_each_upsampling_layer=cond_in_each_up_layer,
            upsample_initial_channel_decoder=TEST_VOCODER_CHANNELS,
        )
    finally:
        torch.random.set_rng_state(rng_state)
    fold_weight_norm(narrow)
    return narrow.waveform_decoder.eval()


def _quick_dummy(size: DummySize, work_dir: Path, seed: int = 0) -> Xtts:
    """A copy of the session's dummy (the loader changes what it gets: weight norm folded, precision), its HiFi-GAN
    generator narrowed (above)."""
    model = copy.deepcopy(_built_dummy(size, work_dir, seed))
    generator = model.hifigan_decoder.waveform_decoder
    narrow = _narrow_generator(
        generator.conv_pre.in_channels, generator.cond_layer.in_channels, generator.cond_in_each_up_layer, seed
    )
    model.hifigan_decoder.waveform_decoder = copy.deepcopy(narrow)
    return model


@pytest.fixture(scope="session", autouse=True)
def quick_in_process_dummies() -> Iterator[None]:
    """`load_model(ModelChoice(dummy=...))` in this process gets `_quick_dummy`; `python run.py` servers, and
    tests that build a dummy themselves, get the full-size one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dummy_model, "build_dummy_xtts", _quick_dummy)
        yield


@pytest.fixture(scope="session")
def full_size_vocoder() -> HifiDecoder:
    """The tiny dummy's HiFi-GAN at its real size (weight norm folded, float32), for the vocoder precision bounds."""
    require_layer("engine", "the tiny model's vocoder")
    decoder: HifiDecoder = copy.deepcopy(_built_dummy("tiny", DUMMY_DIR, 0).hifigan_decoder)
    return decoder.eval()


@pytest.fixture(scope="session")
def tiny_loaded() -> LoadedModel:
    require_layer("engine", "the tiny model")
    return load_model(ModelChoice(dummy="tiny", num_threads=TEST_THREADS))


@pytest.fixture(scope="session")
def tiny_int8_loaded() -> LoadedModel:
    """The tiny model with GPT_PRECISION=int8, loaded as the server loads it."""
    require_layer("engine", "the tiny model")
    return load_model(ModelChoice(dummy="tiny", num_threads=TEST_THREADS, gpt_precision="int8"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_loaded: LoadedModel) -> Iterator[TTSEngine]:
    engine = TTSEngine(tiny_loaded)
    yield engine
    engine.shutdown()


# The Host Starlette's TestClient sends. Only this name is added: the loopback names and HOST are allowed by
# default, so live servers on 127.0.0.1 run with the real ALLOWED_HOSTS default (and attacker names stay out).
TEST_CLIENT_HOST = "testserver"


def app_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for an in-process app: nothing read from the environment or a .env file. A test that sets
    ALLOWED_HOSTS and talks through the TestClient lists `testserver` in it."""
    values: dict[str, Any] = {
        "VOICES_DIR": tmp_path / "voices", "NUM_THREADS": 1, "SHUTDOWN_TIMEOUT": 5, "ALLOWED_HOSTS": TEST_CLIENT_HOST,
        **overrides,
    }  # fmt: skip
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def wait_for(condition: Callable[[], bool], timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def app_client(engine: Engine, settings: Settings) -> Iterator[TestClient]:
    """The app in-process, ready; server errors come back as responses (never raised into the test)."""
    require_layer("app", "the app in-process")
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        wait_for(lambda: client.get("/ready").status_code == 200, what="in-process app ready")
        yield client


@dataclass
class LiveServer:
    """A uvicorn serving the app on 127.0.0.1 from a thread of the test process."""

    url: str
    engine: Engine
    server: uvicorn.Server

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60), **kwargs)


@contextmanager
def live_server(
    engine: Engine, settings: Settings, wait_ready: bool = True, host: str = "127.0.0.1"
) -> Iterator[LiveServer]:
    require_layer("live", "a real uvicorn")
    port = free_port()
    app = create_app(settings, engine=engine, request_exit=lambda: None)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", http="h11"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn start")
    live = LiveServer(f"http://{f'[{host}]' if ':' in host else host}:{port}", engine, server)
    if wait_ready:
        wait_for(lambda: httpx.get(f"{live.url}/ready").status_code == 200, what="live server ready")
    try:
        yield live
    finally:
        server.should_exit = True
        thread.join(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A `python run.py` child process serving on 127.0.0.1."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(tmp_path: Path, wait_ready: bool = True, **env_overrides: str) -> Server:
    require_layer("live", "a server process (python run.py)")
    port = free_port()
    env = {
        **os.environ,
        "DUMMY_MODEL": "tiny",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "NUM_THREADS": "2",
        "VOICES_DIR": str(tmp_path / "voices"),
        "PYTHONUNBUFFERED": "1",
        "SHUTDOWN_TIMEOUT": "5",
        # the reference path, quick to start: the CPU defaults (auto: OpenVINO kernels, compiled at load) are
        # started by tests/test_startup.py::test_default_settings_run_the_fast_cpu_paths
        "GPT_PRECISION": "float32",
        "VOCODER_BACKEND": "torch",
        "VOCODER_PRECISION": "float32",
    }
    env.update(env_overrides)
    log_path = tmp_path / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "run.py"], cwd=REPO, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT
    )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, env)
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server not ready in {START_TIMEOUT_S} s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server for tests that need no special settings."""
    running = start_server(
        tmp_path_factory.mktemp("server"),
        MAX_TEXT_LENGTH="2000",
        MAX_UPLOAD_MB="2",
        OPENAI_VOICE_MAP="alloy=Dummy Bass",
    )
    yield running
    running.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


# The settings the shared apps run with (the subprocess `server` above has the same).
SHARED_SETTINGS: dict[str, Any] = {"MAX_TEXT_LENGTH": 2000, "MAX_UPLOAD_MB": 2, "OPENAI_VOICE_MAP": "alloy=Dummy Bass"}


@pytest.fixture(scope="module")
def fake_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app in-process with the fake engine: for everything that needs no real audio or streaming."""
    with app_client(FakeEngine(), app_settings(tmp_path_factory.mktemp("fake"), **SHARED_SETTINGS)) as client:
        yield client


# Audio tokens per sentence in the tiny model's in-process app: enough for half a second of audio (a token is
# about 46 ms), a third of the tiny model's own cap (40), so each request there costs a third of the vocoder's time.
TINY_APP_AUDIO_TOKENS = 12


@pytest.fixture(scope="session")
def tiny_client(tiny_engine: TTSEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app in-process with the tiny random-weight model: real cloning and latents, no subprocess. One for the
    session (its start-up warms the engine up); tests leave the settings they change as they found them."""
    settings = app_settings(
        tmp_path_factory.mktemp("tiny"), **SHARED_SETTINGS, MAX_AUDIO_TOKENS=TINY_APP_AUDIO_TOKENS, DUMMY_MODEL="tiny"
    )  # DUMMY_MODEL: what /health reports (the engine is the one given)
    with app_client(tiny_engine, settings) as client:
        yield client
