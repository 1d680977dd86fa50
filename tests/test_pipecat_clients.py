"""Pipecat's own services (pipecat-ai, pinned in requirements-dev.txt) in a real Pipeline, pointed at a live server
with the fake engine: ElevenLabsTTSService speaks a saved voice from text with word timestamps that follow the text;
XTTSService speaks a voice cloned over HTTP (it finds voices in /studio_speakers)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from services.engine.latents import VoiceLatents
from services.engine.text import sentencizer
from services.engine.tts import SynthesisStream
from tests.audio_checks import make_clip
from tests.conftest import LiveServer, app_settings, live_server
from tests.fakes import FakeEngine

pytest.importorskip("pipecat")
pytestmark = pytest.mark.live
TEXT = "Hello there, how are you today?"


class VoiceRecordingEngine(FakeEngine):
    """The fake engine, keeping the voice latents of every stream it is asked to speak."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.voices: list[VoiceLatents] = []

    def synthesize(self, sentences, voice, params, cancel: threading.Event) -> SynthesisStream:  # type: ignore[no-untyped-def]
        self.voices.append(voice)
        return super().synthesize(sentences, voice, params, cancel)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    engine = VoiceRecordingEngine(chunks_per_sentence=4, chunk_seconds=0.2, chunk_delay_s=0.02)
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


def test_pipecat_xtts_speaks_a_voice_cloned_over_http(running: LiveServer, tmp_path: Path) -> None:
    from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.services.xtts.tts import XTTSService
    from pipecat.tests.utils import SleepFrame, run_test

    clip = make_clip(tmp_path, "wav")
    with running.client() as client:
        options = json.dumps({"response_format": "save", "save_id": "pc-clone", "name": "Cloned"})
        upload = {"wav_file": (clip.name, clip.read_bytes())}
        cloned = client.post("/clone_speaker", files=upload, data={"options": options})
        assert cloned.status_code == 200, cloned.text
        saved = client.get("/saved_voices/pc-clone").json()
    engine = running.engine
    assert isinstance(engine, VoiceRecordingEngine)
    spoken_before = len(engine.voices)

    async def speak() -> tuple[list[object], list[object]]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            tts = XTTSService(
                base_url=running.url, aiohttp_session=session, sample_rate=24000, language=None,  # type: ignore[arg-type]
                settings=XTTSService.Settings(voice="pc-clone"),  # (language=None: no deprecated argument)
            )  # fmt: skip
            down, up = await run_test(tts, frames_to_send=[TTSSpeakFrame(TEXT), SleepFrame(2)])
            return list(down), list(up)

    down, up = asyncio.run(speak())
    assert not [frame for frame in [*down, *up] if isinstance(frame, ErrorFrame)]
    audio = b"".join(frame.audio for frame in down if isinstance(frame, TTSAudioRawFrame))  # type: ignore[attr-defined]
    assert len(audio) == 0.8 * 24000 * 2  # the whole sentence (the fake engine's 0.8 s), bare PCM
    # it spoke the clone: the latents XTTSService took from /studio_speakers are the saved voice's
    (voice,) = engine.voices[spoken_before:]
    assert torch.allclose(voice.gpt_cond_latent.flatten(), torch.tensor(saved["gpt_cond_latent"]).flatten())
    assert torch.allclose(voice.speaker_embedding.flatten(), torch.tensor(saved["speaker_embedding"]).flatten())
