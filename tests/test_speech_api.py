"""/tts_stream and /tts: the audio's timing (first audio before the end, streams batched together) against the
tiny model in a real uvicorn; real audio in-process with the tiny model; the request handling (formats, latents,
every kind of bad input) in-process with the fake engine."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.audio_checks import assert_complete_wav, assert_pcm_wav, ffprobe, parse_streamed_wav, pcm_snr_db
from tests.conftest import BUILTIN_SPEAKER, Server

THREE_SENTENCES = (
    "The first sentence is here and it is long enough to stand alone in a chunk. "
    "Then a second sentence follows it, which the splitter should keep apart from the first one. "
    "And a third sentence closes the text, so that the stream has plenty left to say after the start."
)


def speech(text: str = "Hello world.", **extra: object) -> dict[str, object]:
    return {"text": text, "language": "en", "speaker_id": BUILTIN_SPEAKER, **extra}


def test_stream_is_a_24khz_mono_16bit_wav_that_ffprobe_reads(tiny_client: TestClient) -> None:
    response = tiny_client.post("/tts_stream", json=speech(seed=1))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["x-session-id"]
    assert_pcm_wav(response.content)
    stream = ffprobe(response.content)["streams"][0]
    assert (stream["codec_name"], stream["sample_rate"], stream["channels"]) == ("pcm_s16le", "24000", 1)


def test_first_audio_arrives_well_before_the_stream_ends(client: httpx.Client) -> None:
    arrivals: list[tuple[float, int]] = []
    started = time.perf_counter()
    with client.stream("POST", "/tts_stream", json=speech(THREE_SENTENCES, seed=2)) as response:
        assert response.status_code == 200
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            arrivals.append((time.perf_counter() - started, received))
    ended = arrivals[-1][0]
    header_at = next(at for at, total in arrivals if total >= 44)
    first_audio_at = next(at for at, total in arrivals if total > 44)
    assert received > 44 + 24000  # over half a second of audio
    assert header_at < ended / 2
    # three sentences: audio must start before the first one is even finished
    assert first_audio_at < ended / 3, (first_audio_at, ended)


def test_stream_without_header_is_bare_pcm(fake_client: TestClient) -> None:
    with_header = fake_client.post("/tts_stream", json=speech(seed=3))
    response = fake_client.post("/tts_stream", json=speech(add_wav_header=False, seed=3))
    assert response.status_code == 200
    assert response.content == with_header.content[44:]


def test_same_seed_gives_the_same_audio(tiny_client: TestClient) -> None:
    first = tiny_client.post("/tts_stream", json=speech(seed=42))
    second = tiny_client.post("/tts_stream", json=speech(seed=42))
    other = tiny_client.post("/tts_stream", json=speech(seed=43))
    assert first.headers["x-seed"] == "42"
    assert first.content == second.content
    assert first.content != other.content


def test_tts_returns_a_complete_wav_equal_to_the_stream(fake_client: TestClient) -> None:
    response = fake_client.post("/tts", json=speech(seed=5), headers={"Accept": "audio/wav"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav" and response.headers["x-seed"] == "5"
    samples = assert_complete_wav(response.content)
    streamed = fake_client.post("/tts_stream", json=speech(seed=5)).content
    assert samples.tobytes() == streamed[44:]


def test_tts_answers_base64_json_when_asked(fake_client: TestClient) -> None:
    response = fake_client.post("/tts", json=speech(seed=5), headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert_complete_wav(base64.b64decode(response.json()))


def test_coqui_client_flow_works_unchanged(tiny_client: TestClient) -> None:
    """What coqui-ai/xtts-streaming-server's demo and test clients send and read (the tiny model, in-process)."""
    client = tiny_client
    studio = client.get("/studio_speakers").json()
    latents = studio[BUILTIN_SPEAKER]
    assert np.array(latents["gpt_cond_latent"]).shape == (32, 1024)
    assert len(latents["speaker_embedding"]) == 512
    stream = client.post(
        "/tts_stream",
        json={"text": "Hello.", "language": "en", "add_wav_header": False, "stream_chunk_size": "20", **latents},
        headers={"Accept": "*/*"},
    )
    assert stream.status_code == 200 and len(stream.content) > 24000
    whole = client.post("/tts", json={"text": "Hello.", "language": "en", **latents}, headers={"Accept": "*/*"})
    assert whole.status_code == 200
    # the demo client does base64.b64decode(response.content), quotes and all
    assert_complete_wav(base64.b64decode(whole.content))
    assert client.get("/languages").json()[:3] == ["en", "es", "fr"]


def test_latents_squeezed_or_not_both_work(fake_client: TestClient) -> None:
    client = fake_client
    latents = client.get("/studio_speakers").json()[BUILTIN_SPEAKER]
    unsqueezed = {
        "gpt_cond_latent": [latents["gpt_cond_latent"]],
        "speaker_embedding": [[value] for value in latents["speaker_embedding"]],
    }
    flat = {
        "gpt_cond_latent": np.array(latents["gpt_cond_latent"]).ravel().tolist(),
        "speaker_embedding": latents["speaker_embedding"],
    }
    for voice in (unsqueezed, flat):
        response = client.post("/tts_stream", json={"text": "Hi.", "language": "en", **voice})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (speech(language="xx"), 422, "unsupported language"),
        (speech(text="   "), 422, "text is empty"),
        (speech(text=""), 422, "text"),
        (speech(text="a" * 2001), 400, "MAX_TEXT_LENGTH"),
        (speech(speaker_id="nobody-here"), 404, "nobody-here"),
        (speech(speaker_id="../../etc/passwd"), 404, "no saved voice"),
        (speech(temperature=0), 422, "temperature"),
        (speech(top_p=1.5), 422, "top_p"),
        (speech(speed=10), 422, "speed"),
        (speech(stream_chunk_size=0), 422, "stream_chunk_size"),
        (speech(seed=-1), 422, "seed"),
        ({"text": "Hi", "language": "en"}, 422, "speaker_id"),
        (
            {"text": "Hi", "language": "en", "gpt_cond_latent": [[0.0] * 1000] * 31, "speaker_embedding": [0.0] * 512},
            422,
            "[N, 1024]",
        ),
        (
            {"text": "Hi", "language": "en", "gpt_cond_latent": [[0.0] * 1024] * 32, "speaker_embedding": [0.0] * 500},
            422,
            "[512]",
        ),
        (
            {"text": "Hi", "language": "en", "gpt_cond_latent": [[0.0] * 32] * 1024, "speaker_embedding": [0.0] * 512},
            422,
            "[N, 1024]",
        ),
    ],
)
def test_bad_input_gets_a_clear_4xx_before_any_model_work(
    fake_client: TestClient, body: dict[str, object], status: int, needle: str
) -> None:
    client = fake_client
    jobs_before = client.get("/health").json()["requests"]["model_jobs"]
    for path in ("/tts_stream", "/tts"):
        response = client.post(path, json=body)
        assert response.status_code == status, response.text
        error = response.json()
        assert error["error"] and needle in error["message"], error
    assert client.get("/health").json()["requests"]["model_jobs"] == jobs_before


def test_malformed_json_is_422_and_the_server_keeps_serving(fake_client: TestClient) -> None:
    response = fake_client.post("/tts_stream", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert fake_client.post("/tts_stream", json=speech(seed=9)).status_code == 200


@pytest.mark.parametrize(("language", "text"), [("ja", "こんにちは。"), ("zh-cn", "你好。")])
def test_text_that_is_romanised_first_streams(tiny_client: TestClient, language: str, text: str) -> None:
    """Japanese and Chinese go through cutlet and pypinyin before the tokenizer (test_text covers every script)."""
    response = tiny_client.post("/tts_stream", json={**speech(text), "language": language, "seed": 1})
    assert response.status_code == 200, response.text
    _header, samples = parse_streamed_wav(response.content)
    assert samples.size > 0


def test_concurrent_streams_batch_together_and_sound_as_if_alone(client: httpx.Client, server: Server) -> None:
    """Streams decode in one batch on the one model thread without hearing each other (tests/test_batching.py
    holds the exact bounds)."""
    bodies = [speech(THREE_SENTENCES, seed=101), speech(THREE_SENTENCES, seed=102)]
    alone = [client.post("/tts_stream", json=body).content for body in bodies]
    together: dict[int, bytes] = {}
    first_audio_at: dict[int, float] = {}
    finished_at: dict[int, float] = {}
    started = time.perf_counter()

    def run(index: int) -> None:
        with server.client() as own, own.stream("POST", "/tts_stream", json=bodies[index]) as response:
            received = b""
            for chunk in response.iter_raw():
                received += chunk
                if len(received) > 44 and index not in first_audio_at:
                    first_audio_at[index] = time.perf_counter() - started
            together[index] = received
            finished_at[index] = time.perf_counter() - started

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    threads[0].start()
    time.sleep(0.3)
    threads[1].start()
    for thread in threads:
        thread.join(120)
    for index in range(2):  # the same samples, to float rounding in the shared forward pass
        assert len(together[index]) == len(alone[index])
        assert pcm_snr_db(together[index][44:], alone[index][44:]) > 60
    # the second stream did not wait for the first to finish
    assert first_audio_at[1] < finished_at[0] - 0.5, (first_audio_at, finished_at)
