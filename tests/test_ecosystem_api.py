"""OpenAI's speech API with the official client, output formats, and /metrics.

The official client streams from `python run.py` with the tiny model (audio long before the end, SSE); for
formats, errors and the model list it runs in-process on the fake engine's app (its HTTP client is the
TestClient), as do the format matrix and metrics.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator

import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.audio_checks import assert_pcm_wav, ffprobe
from tests.conftest import BUILTIN_SPEAKER, Server

TEXT = "Hello there. This is a streaming format test with a couple of sentences to say."


@pytest.fixture(scope="module")
def openai_client(server: Server) -> openai.OpenAI:
    """The official client against `python run.py` with the tiny model."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def openai_fake(fake_client: TestClient) -> openai.OpenAI:
    """The official client on the fake engine's app in-process: its HTTP client is the TestClient."""
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key="not-needed", max_retries=0, timeout=30, http_client=fake_client
    )


@pytest.fixture(scope="module")
def saved_voice(server: Server) -> str:
    with server.client() as client:
        latents = client.get("/studio_speakers").json()["Dummy Tenor"]
        assert client.post("/save_voice/openai-voice", json={**latents, "overwrite": True}).status_code == 201
    return "openai-voice"


def decoded_seconds(data: bytes) -> float:
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "24000", "-"],
                         input=data, capture_output=True, check=True).stdout  # fmt: skip
    return len(pcm) / 48000


def test_openai_client_streams_mp3_with_a_saved_voice(openai_client: openai.OpenAI, saved_voice: str) -> None:
    chunks: list[tuple[float, int]] = []
    started = time.perf_counter()
    with openai_client.audio.speech.with_streaming_response.create(
        model="tts-1", voice=saved_voice, input=TEXT, response_format="mp3", extra_body={"seed": 2}
    ) as response:  # seeded: random weights may sample the stop token early, unseeded they sometimes did
        assert response.headers["content-type"] == "audio/mpeg"
        data = b""
        for chunk in response.iter_bytes():
            data += chunk
            chunks.append((time.perf_counter() - started, len(chunk)))
    assert ffprobe(data)["streams"][0]["codec_name"] == "mp3"
    assert decoded_seconds(data) > 1.0
    assert len(chunks) > 2 and chunks[0][0] < chunks[-1][0] * 0.7  # it streamed: audio long before the end


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_openai_formats_decode(openai_fake: openai.OpenAI, response_format: str) -> None:
    response = openai_fake.audio.speech.create(
        model="tts-1-hd",
        voice="alloy",
        input="Short one.",
        response_format=response_format,  # type: ignore[arg-type]
    )
    data = response.content
    if response_format == "pcm":
        assert len(data) % 2 == 0 and len(data) >= 24000 * 2 * 0.3  # three 0.1 s chunks of 24 kHz 16-bit
        return
    stream = ffprobe(data)["streams"][0]
    expected = {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac", "wav": "pcm_s16le"}[response_format]
    assert stream["codec_name"] == expected and stream["channels"] == 1
    assert decoded_seconds(data) == pytest.approx(0.3, abs=0.15)  # AAC adds ~0.1 s of priming


def test_openai_errors_come_in_openais_shape(openai_fake: openai.OpenAI) -> None:
    openai_client = openai_fake
    with pytest.raises(openai.NotFoundError) as unknown_voice:
        openai_client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert unknown_voice.value.body["code"] == "voice_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        openai_client.audio.speech.create(model="no-such-model", voice="alloy", input="Hi.")
    with pytest.raises(openai.UnprocessableEntityError) as bad_speed:
        openai_client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=9)
    assert bad_speed.value.body["param"] == "speed"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client.audio.speech.create(model="tts-1", voice="alloy", input="  ")


def test_models_are_listed(openai_fake: openai.OpenAI) -> None:
    assert {"tts-1", "tts-1-hd", "xtts-v2"} <= {model.id for model in openai_fake.models.list()}


def test_language_is_detected_or_taken_from_the_request(fake_client: TestClient) -> None:
    client = fake_client
    body = {"model": "tts-1", "voice": BUILTIN_SPEAKER, "response_format": "wav"}
    german = client.post("/v1/audio/speech", json={**body, "input": "Guten Morgen, wie geht es dir heute?"})
    assert german.status_code == 200 and german.headers["x-language"] == "de"
    forced = client.post("/v1/audio/speech", json={**body, "input": "Guten Morgen.", "language": "fr"})
    assert forced.headers["x-language"] == "fr"


@pytest.mark.parametrize(
    ("output_format", "sample_rate", "codec"),
    [("mp3", 24000, "mp3"), ("opus", 48000, "opus"), ("aac", 16000, "aac"), ("flac", 22050, "flac"),
     ("wav", 16000, "pcm_s16le")],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/tts_stream", "/tts"])
def test_output_formats_and_sample_rates(
    fake_client: TestClient, path: str, output_format: str, sample_rate: int, codec: str
) -> None:
    client = fake_client
    body = {"text": TEXT, "language": "en", "speaker_id": BUILTIN_SPEAKER, "output_format": output_format,
            "sample_rate": sample_rate, "seed": 3}  # fmt: skip
    response = client.post(path, json=body, headers={"Accept": "*/*"})
    assert response.status_code == 200, response.text
    stream = ffprobe(response.content)["streams"][0]
    assert stream["codec_name"] == codec
    assert int(stream["sample_rate"]) == (48000 if output_format == "opus" else sample_rate)  # Opus decodes at 48k
    assert decoded_seconds(response.content) == pytest.approx(0.6, abs=0.15)  # 2 sentences x 3 chunks x 0.1 s


def test_pcm_output_resamples(fake_client: TestClient) -> None:
    client = fake_client
    body = {"text": "Hi.", "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 4}
    native = client.post("/tts_stream", json={**body, "output_format": "pcm"}).content
    halved = client.post("/tts_stream", json={**body, "output_format": "pcm", "sample_rate": 12000}).content
    assert abs(len(halved) * 2 - len(native)) < 2000


def test_impossible_format_rate_pairs_are_422(fake_client: TestClient) -> None:
    client = fake_client
    body = {"text": "Hi.", "language": "en", "speaker_id": BUILTIN_SPEAKER}
    for extra in ({"output_format": "opus", "sample_rate": 44100}, {"sample_rate": 1234}, {"output_format": "ogg"}):
        response = client.post("/tts_stream", json={**body, **extra})
        assert response.status_code == 422, response.text


def test_metrics_scrape_cleanly(fake_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    client = fake_client
    assert (
        client.post(
            "/tts_stream", json={"text": "Metrics.", "language": "en", "speaker_id": BUILTIN_SPEAKER}
        ).status_code
        == 200
    )
    client.get("/no/such/route")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    requests = {
        (sample.labels["route"], sample.labels["status"])
        for sample in families["xtts_http_requests"].samples
        if sample.name == "xtts_http_requests_total"
    }
    assert ("/tts_stream", "200") in requests and ("unmatched", "404") in requests
    ttfa_count = next(
        s.value for s in families["xtts_time_to_first_audio_seconds"].samples if s.name.endswith("_count")
    )
    assert ttfa_count >= 1
    assert any(s.value > 0 for s in families["xtts_real_time_factor"].samples if s.name.endswith("_count"))
    for name in ("xtts_requests_in_flight", "xtts_requests_queued", "xtts_request_capacity",
                 "xtts_speaker_cache_hits", "xtts_speaker_cache_misses", "xtts_model_load_seconds"):  # fmt: skip
        assert name in families, name
    assert next(iter(families["xtts_model_load_seconds"].samples)).value > 0
    assert next(iter(families["xtts_batch_steps"].samples)).value >= 1  # the streams above stepped
    assert next(iter(families["xtts_batch_streams"].samples)).value == 0  # and have all left the batch
    assert "outcome=completed" in caplog.text and "session=" in caplog.text


def sse_events(lines: Iterator[str]) -> list[dict[str, object]]:
    """Events as a client that reads `data:` lines parses them (what OpenAI's examples do)."""
    return [json.loads(line[5:]) for line in lines if line.startswith("data:")]


def test_openai_client_streams_server_sent_events(openai_client: openai.OpenAI, saved_voice: str) -> None:
    arrivals: list[float] = []
    started = time.perf_counter()
    lines: list[str] = []
    with openai_client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice=saved_voice, input=TEXT, response_format="wav", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            lines.append(line)
            arrivals.append(time.perf_counter() - started)
    events = sse_events(iter(lines))
    assert [event["type"] for event in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert isinstance(usage, dict) and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    wav = b"".join(base64.b64decode(str(event["audio"])) for event in events[:-1])
    assert_pcm_wav(wav)
    assert len(events) > 3 and arrivals[0] < arrivals[-1] / 2  # deltas came as the audio was made


@pytest.mark.parametrize("response_format", ["wav", "mp3", "pcm"])
def test_sse_deltas_join_into_the_same_bytes_as_the_audio_stream(
    openai_fake: openai.OpenAI, response_format: str
) -> None:
    request = {"model": "tts-1", "voice": "alloy", "input": "Short one.", "response_format": response_format}
    seed = {"extra_body": {"seed": 7}}  # our extension: the same seed makes the same audio
    audio = openai_fake.audio.speech.create(**request, **seed).content  # type: ignore[arg-type]
    with openai_fake.audio.speech.with_streaming_response.create(**request, **seed, stream_format="sse") as response:  # type: ignore[arg-type]
        events = sse_events(response.iter_lines())
    assert events[-1]["type"] == "speech.audio.done"
    joined = b"".join(base64.b64decode(str(event["audio"])) for event in events[:-1])
    assert joined == audio and len(audio) > 0


def test_voice_and_model_lists_parse_as_open_webui_reads_them(fake_client: TestClient) -> None:
    latents = fake_client.get("/studio_speakers").json()["Dummy Tenor"]
    saved = fake_client.post("/save_voice/listed-voice", json={**latents, "name": "Listed", "overwrite": True})
    assert saved.status_code == 201
    data = fake_client.get("/v1/audio/voices").json()
    # backend/open_webui/routers/audio.py: {voice["id"]: voice["name"] for voice in data.get("voices", [])}
    available = {voice["id"]: voice["name"] for voice in data.get("voices", [])}
    assert available["listed-voice"] == "Listed"
    assert available[BUILTIN_SPEAKER] == BUILTIN_SPEAKER and "alloy" in available  # OPENAI_VOICE_MAP's names
    legacy = fake_client.get("/v1/audio/voices", params={"legacy": "true"}).json()["voices"]
    assert legacy == list(available)
    models = fake_client.get("/v1/audio/models").json().get("models", [])
    assert {"tts-1", "xtts-v2"} <= {model["id"] for model in models}
    # every id listed can be spoken
    for voice_id in ("listed-voice", BUILTIN_SPEAKER, "alloy"):
        body = {"model": "tts-1", "voice": voice_id, "input": "Hi.", "response_format": "pcm"}
        assert fake_client.post("/v1/audio/speech", json=body).status_code == 200
