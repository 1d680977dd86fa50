"""Pipecat's interruption in a real Pipeline: ElevenLabsTTSService against a live server (fake engine, paced) starts
a long reply, Pipecat's InterruptionFrame arrives mid-reply, and the server stops that context at once: its sessions
end cancelled ("cleared by the client") within half a second, the model does no more work for it, and the next
reply speaks whole."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from api.state import app_state
from services.engine.text import sentencizer
from services.segments import CLEARED
from tests.conftest import LiveServer, app_settings, live_server
from tests.fakes import FakeEngine

pytest.importorskip("pipecat")
pytestmark = pytest.mark.live

SENTENCES = 12
LONG = " ".join(f"This is sentence number {n} of a long reply." for n in range(1, SENTENCES + 1))
NEXT = "Okay."  # the next reply: one sentence, shorter than any of the long reply's
STOPPED_WITHIN_S = 0.5


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # 50 ms a chunk, 4 chunks a sentence: the long reply takes the model 2.4 s or more, so it is mid-way when
    # the interruption comes 0.7 s in
    engine = FakeEngine(chunks_per_sentence=4, chunk_seconds=0.2, chunk_delay_s=0.05)
    sentencizer("en")
    with live_server(engine, app_settings(tmp_path_factory.mktemp("interrupt"))) as server:
        with httpx.Client(base_url=server.url) as client:
            latents = client.get("/studio_speakers").json()["Dummy Tenor"]
            assert client.post("/save_voice/pc-voice", json=latents).status_code == 201
        yield server


@dataclass
class Watch:
    """What a thread saw of the server while the pipeline ran: /health's load, and every session's id and size."""

    health: list[tuple[float, int, int]] = field(default_factory=list)  # (time, elevenlabs sessions, model jobs)
    sessions: dict[str, int] = field(default_factory=dict)  # id -> characters
    stop: threading.Event = field(default_factory=threading.Event)


def _watch(server: LiveServer, watch: Watch) -> None:
    state = app_state(server.server.config.app)
    assert state is not None
    with server.client(timeout=5) as client:
        while not watch.stop.is_set():
            for live in state.sessions.live():  # only ids are read here; their outcome comes over HTTP
                if live.session.family == "elevenlabs":
                    watch.sessions[live.session.id] = live.session.characters
            load = client.get("/health").json()["requests"]
            watch.health.append((time.time(), load["live_by_family"].get("elevenlabs", 0), load["model_jobs"]))
            time.sleep(0.02)


def test_pipecat_interruption_stops_the_context_on_the_server_and_the_next_reply_speaks(running: LiveServer) -> None:
    from pipecat.frames.frames import ErrorFrame, InterruptionFrame, TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.observers.base_observer import BaseObserver, FramePushed
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
    from pipecat.tests.utils import SleepFrame, run_test

    tts = ElevenLabsTTSService(
        api_key="unused", url=running.url.replace("http://", "ws://"), sample_rate=24000,
        settings=ElevenLabsTTSService.Settings(voice="pc-voice", model="eleven_flash_v2_5"),
    )  # fmt: skip
    seen: dict[str, float] = {}
    audio: list[tuple[float, str | None, int]] = []  # what the TTS pushed: (time, context, bytes)

    class Timeline(BaseObserver):
        async def on_push_frame(self, data: FramePushed) -> None:
            if data.destination is tts and isinstance(data.frame, InterruptionFrame):
                seen.setdefault("interrupted", time.time())
            if data.destination is tts and isinstance(data.frame, TTSSpeakFrame) and data.frame.text == NEXT:
                seen.setdefault("next", time.time())
            if data.source is tts and isinstance(data.frame, TTSAudioRawFrame):
                audio.append((time.time(), data.frame.context_id, len(data.frame.audio)))

    watch = Watch()
    watcher = threading.Thread(target=_watch, args=(running, watch), daemon=True)
    watcher.start()
    # 2 s before the next reply: /health is sampled at least once in the quiet 1.5 s after STOPPED_WITHIN_S even on a
    # loaded machine (CI's: with 1 s, no sample landed in the 0.5 s left)
    frames = [TTSSpeakFrame(LONG), SleepFrame(0.7), InterruptionFrame(), SleepFrame(2.0), TTSSpeakFrame(NEXT)]
    try:
        down, up = asyncio.run(run_test(tts, frames_to_send=[*frames, SleepFrame(2.5)], observers=[Timeline()]))
    finally:
        watch.stop.set()
        watcher.join(10)
    assert not [frame for frame in [*down, *up] if isinstance(frame, ErrorFrame)]
    interrupted, next_reply = seen["interrupted"], seen["next"]

    # the long reply was speaking when the interruption came, and Pipecat passed on none of it after
    first = [(at, context) for at, context, _ in audio if at < interrupted]
    assert first, "no audio of the long reply before the interruption"
    long_context = first[0][1]
    assert not [at for at, context, _ in audio if context == long_context and at > interrupted + 0.05]

    # the server: the long reply's sessions ended, cancelled by the clear, at once; the reply did not finish
    with running.client() as client:
        outcome = {sid: client.get(f"/stream_status/{sid}").json() for sid, size in watch.sessions.items() if size > 10}
    cancelled = [status for status in outcome.values() if status["state"] == "cancelled"]
    assert cancelled and all(status["error"] == CLEARED for status in cancelled)
    assert all(status["finished_at"] <= interrupted + STOPPED_WITHIN_S for status in cancelled)
    assert sum(status["state"] == "completed" for status in outcome.values()) < SENTENCES
    # ... and it did no more model work for it: between then and the next reply, nothing live, no model job
    quiet = [(live, jobs) for at, live, jobs in watch.health if interrupted + STOPPED_WITHIN_S < at < next_reply]
    assert quiet and all(live == 0 for live, _ in quiet)
    assert len({jobs for _, jobs in quiet}) == 1

    # the next reply speaks, whole (the fake engine's 0.8 s for its one sentence)
    after = [size for at, context, size in audio if at > next_reply and context != long_context]
    assert sum(after) == 0.8 * 24000 * 2
