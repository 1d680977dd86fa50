"""Pipecat's own ElevenLabsTTSService (pipecat-ai, pinned in requirements-dev.txt) in a real Pipeline, pointed at a
live server with the fake engine: it speaks a saved voice from text, and its word timestamps follow the text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from services.engine.text import sentencizer
from tests.conftest import LiveServer, app_settings, live_server
from tests.fakes import FakeEngine

pytest.importorskip("pipecat")
pytestmark = pytest.mark.live
TEXT = "Hello there, how are you today?"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    engine = FakeEngine(chunks_per_sentence=4, chunk_seconds=0.2, chunk_delay_s=0.02)
    sentencizer("en")  # loaded once (seconds) before any text waits on it
    with live_server(engine, app_settings(tmp_path_factory.mktemp("pipecat"))) as server:
        with httpx.Client(base_url=server.url) as client:  # a cloned voice, saved
            latents = client.get("/studio_speakers").json()["Dummy Tenor"]
            assert client.post("/save_voice/pc-voice", json=latents).status_code == 201
        yield server


def test_pipecat_elevenlabs_speaks_a_saved_voice_with_word_timestamps_in_order(running: LiveServer) -> None:
    from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame, TTSTextFrame
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
    from pipecat.tests.utils import SleepFrame, run_test

    tts = ElevenLabsTTSService(
        api_key="unused", url=running.url.replace("http://", "ws://"), sample_rate=24000,
        settings=ElevenLabsTTSService.Settings(voice="pc-voice", model="eleven_flash_v2_5"),
    )  # fmt: skip
    down, up = asyncio.run(run_test(tts, frames_to_send=[TTSSpeakFrame(TEXT), SleepFrame(3)]))
    audio = b"".join(frame.audio for frame in down if isinstance(frame, TTSAudioRawFrame))
    assert len(audio) == 0.8 * 24000 * 2  # the whole sentence (the fake engine's 0.8 s)
    words = [frame for frame in down if isinstance(frame, TTSTextFrame)]
    assert " ".join(frame.text for frame in words) == TEXT
    times = [frame.pts for frame in words]
    assert times == sorted(times)
    assert not up  # no ErrorFrame
