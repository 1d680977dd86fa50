"""Wyoming (Home Assistant) against a real server: the `wyoming` package's own AsyncTcpClient sends Home Assistant's
exact event sequences (homeassistant/components/wyoming/tts.py: describe; a plain synthesize read until audio-stop;
synthesize-start, chunks, the whole text again as a plain synthesize, synthesize-stop, read until
synthesize-stopped), with a saved voice and no language, as Home Assistant does."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from tests.conftest import REPO
from tests.wyoming_client import Answer, RecordingEngine, Wyoming, assert_paired_audio, describe, read_until, start

pytestmark = pytest.mark.live

SAVED = "kitchen-voice"
GERMAN = "Guten Morgen, wie geht es dir heute? Das Wetter ist schön und die Sonne scheint."


@pytest.fixture(scope="module")
def wyoming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wyoming]:
    engine = RecordingEngine(chunks_per_sentence=5, chunk_delay_s=0.04)
    with start(tmp_path_factory.mktemp("wyoming"), engine) as running:
        yield running


@pytest.fixture(scope="module")
def saved_voice(wyoming: Wyoming) -> str:
    with wyoming.live.client() as http:
        latents = http.get("/studio_speakers").json()["Dummy Bass"]
        body = {**latents, "name": "Kitchen", "description": "cloned for the kitchen", "overwrite": True}
        assert http.post(f"/save_voice/{SAVED}", json=body).status_code == 201
    return SAVED


def test_describe_lists_saved_voices_and_speakers_with_every_language_and_follows_http(wyoming: Wyoming) -> None:
    async def run() -> tuple[Info, Info, Info]:
        async with wyoming.connect() as client:
            before = await describe(client)
            with wyoming.live.client() as http:
                latents = http.get("/studio_speakers").json()["Dummy Alto"]
                assert http.post("/save_voice/just-saved", json={**latents, "name": "Just saved"}).status_code == 201
                during = await describe(client)  # the same connection: Home Assistant asks again on reload
                assert http.delete("/saved_voices/just-saved").status_code in {200, 204}
            return before, during, await describe(client)

    before, during, after = asyncio.run(run())
    program = during.tts[0]
    assert program.installed and program.supports_synthesize_streaming and program.version
    assert program.attribution.name and program.name == "xtts"
    names = [voice.name for voice in program.voices]
    assert names[0] == "just-saved" and {"Dummy Alto", "Dummy Bass", "narrator"} <= set(names)
    for voice in program.voices:
        assert voice.installed and voice.description and len(voice.languages) == 17 and "en" in voice.languages
    assert "just-saved" not in [voice.name for voice in before.tts[0].voices]
    assert [voice.name for voice in after.tts[0].voices] == [voice.name for voice in before.tts[0].voices]


def test_plain_synthesize_speaks_a_saved_voice_with_no_language_as_it_is_generated(
    wyoming: Wyoming, saved_voice: str
) -> None:
    async def run() -> Answer:
        async with wyoming.connect() as client:
            sent_at = time.monotonic()
            await client.write_event(Synthesize(text=GERMAN, voice=SynthesizeVoice(name=saved_voice)).event())
            answer = await read_until(client, "audio-stop")  # what Home Assistant reads
            answer.events.insert(0, (sent_at, Event("sent")))
            return answer

    answer = asyncio.run(run())
    assert_paired_audio(answer)
    assert [event.type for event in answer.of("audio-start", "audio-stop")] == ["audio-start", "audio-stop"]
    assert answer.of("error") == []
    chunks = answer.of("audio-chunk")
    assert len(chunks) == 10  # 2 sentences x 5 chunks, each sent as the model made it
    # the first chunk came once the model made it, long before the last (10 chunks 40 ms apart)
    assert answer.first_at("audio-chunk") - answer.first_at("sent") < answer.first_at(
        "audio-stop"
    ) - 0.2 - answer.first_at("sent")
    assert (GERMAN, "de") in wyoming.engine.planned  # no language given: detected from the text


def test_streaming_speaks_each_sentence_before_the_text_ends_and_ignores_the_repeated_synthesize(
    wyoming: Wyoming, saved_voice: str
) -> None:
    pieces = ["The kit", "chen lights are", " on now. Anything", " else I can do for you", "? I'm here."]
    whole = "".join(pieces)

    async def run() -> tuple[Answer, float, Answer]:
        voice = SynthesizeVoice(name=saved_voice)
        async with wyoming.connect() as client:
            await client.write_event(SynthesizeStart(voice=voice).event())
            for piece in pieces[:3]:  # split mid-word, as a language model writes
                await client.write_event(SynthesizeChunk(text=piece).event())
            answer = await read_until(client, "audio-chunk")  # the first sentence speaks while text is still coming
            rest_sent_at = time.monotonic()
            for piece in pieces[3:]:
                await client.write_event(SynthesizeChunk(text=piece).event())
            await client.write_event(Synthesize(text=whole, voice=voice).event())  # for servers that don't stream
            await client.write_event(SynthesizeStop().event())
            answer = await read_until(client, "synthesize-stopped", answer=answer)
            await client.write_event(Describe().event())
            return answer, rest_sent_at, await read_until(client, "info")  # nothing more was spoken meanwhile

    planned_before = len(wyoming.engine.planned)
    answer, rest_sent_at, after = asyncio.run(run())
    assert [event.type for _, event in after.events] == ["info"]
    assert answer.first_at("audio-chunk") < rest_sent_at
    assert_paired_audio(answer)
    assert len(answer.of("audio-start")) == 3 and answer.of("error") == []  # one per sentence, none for the repeat
    assert answer.events[-1][1].type == "synthesize-stopped"
    # each sentence once, the repeat none; the order of planning is not the order of playing (a sentence opens
    # while the one before it plays, and two ready at once race to the planner), the conversation tests check that
    spoken = wyoming.engine.planned[planned_before:]
    assert sorted(text for text, _ in spoken) == [
        "Anything else I can do for you?",
        "I'm here.",
        "The kitchen lights are on now.",
    ]
    assert {language for _, language in spoken} == {"en"}
    assert len(answer.audio) == 3 * 5 * int(0.1 * 24000) * 2


def test_bad_events_get_error_events_and_the_connection_keeps_serving(wyoming: Wyoming, saved_voice: str) -> None:
    long_text = "word " * 100  # MAX_TEXT_LENGTH is 300
    bad = [
        (Event("transcribe", {"language": "en"}), "invalid_input"),
        (Event("synthesize", {"voice": {"name": saved_voice}}), "invalid_input"),
        (Synthesize(text="   ").event(), "invalid_input"),
        (Synthesize(text=long_text).event(), "invalid_input"),
        (Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody-here")).event(), "voice_not_found"),
        (Event("synthesize", {"text": "Hello.", "voice": "Dummy Bass"}), "invalid_input"),
        (
            Event("synthesize", {"text": "Hello.", "voice": {"name": "Dummy Bass", "language": "xx"}}),
            "unsupported_language",
        ),
        (SynthesizeChunk(text="stray").event(), "invalid_input"),
        (SynthesizeStop().event(), "invalid_input"),
    ]

    async def run() -> tuple[list[Event], Answer, Answer, Info]:
        errors = []
        async with wyoming.connect() as client:
            for event, _code in bad:
                await client.write_event(event)
                errors.append((await read_until(client, "error", "audio-start")).events[-1][1])
            # a stream with an unknown voice: one error, its chunks dropped, its stop still answered
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody-here")).event())
            await client.write_event(SynthesizeChunk(text="Hello there.").event())
            await client.write_event(Synthesize(text="Hello there.").event())
            await client.write_event(SynthesizeStop().event())
            refused = await read_until(client, "synthesize-stopped")
            await client.write_event(Synthesize(text="Still here.", voice=SynthesizeVoice(name=saved_voice)).event())
            spoken = await read_until(client, "audio-stop")
            return errors, refused, spoken, await describe(client)

    errors, refused, spoken, info = asyncio.run(run())
    assert [(event.type, Error.from_event(event).code) for event in errors] == [("error", code) for _, code in bad]
    assert all(Error.from_event(event).text for event in errors)
    assert [event.type for _, event in refused.events] == ["error", "synthesize-stopped"]
    assert Error.from_event(refused.of("error")[0]).code == "voice_not_found"
    assert len(spoken.of("audio-chunk")) == 5 and info.tts


def test_health_and_metrics_count_wyoming_sessions(wyoming: Wyoming, saved_voice: str) -> None:
    async def run() -> dict[str, int]:
        async with wyoming.connect() as client:
            await client.write_event(
                Synthesize(text="Counting. One more.", voice=SynthesizeVoice(name=saved_voice)).event()
            )
            await read_until(client, "audio-chunk")
            with wyoming.live.client() as http:
                live = http.get("/health").json()["requests"]["live_by_family"]
            await read_until(client, "audio-stop")
            return live

    assert asyncio.run(run()) == {"wyoming": 1}
    with wyoming.live.client() as http:
        families = text_string_to_metric_families(http.get("/metrics").text)
        streams = next(family for family in families if family.name == "xtts_streams")
    completed = [s.value for s in streams.samples if s.labels == {"outcome": "completed", "family": "wyoming"}]
    assert completed and completed[0] >= 1


def test_the_readme_check_speaks_to_a_wav(wyoming: Wyoming, tmp_path: object) -> None:
    out = f"{tmp_path}/hello.wav"
    done = subprocess.run(
        [sys.executable, "-m", "api.wyoming.check", "--port", str(wyoming.port), "--out", out, "Hello from Wyoming."],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "voices" in done.stdout and "first audio after" in done.stdout
    assert open(out, "rb").read(4) == b"RIFF"


def test_a_seeded_synthesize_says_what_tts_stream_says_with_that_seed(wyoming: Wyoming, saved_voice: str) -> None:
    text = "The same sentence, twice. Once more."

    async def run() -> Answer:
        async with wyoming.connect() as client:
            request = Synthesize(text=text, voice=SynthesizeVoice(name=saved_voice)).event()
            request.data["seed"] = 7  # this server's extension (make bench compares with /tts_stream by it)
            await client.write_event(request)
            return await read_until(client, "audio-stop")

    over_wyoming = asyncio.run(run()).audio
    with wyoming.live.client() as http:
        body = {"text": text, "language": "en", "speaker_id": saved_voice, "seed": 7, "add_wav_header": False}
        over_http = http.post("/tts_stream", json=body).content
    assert len(over_wyoming) > 0 and over_wyoming == over_http
