"""ElevenLabs' API in-process with the fake engine, with requests shaped as Pipecat's ElevenLabsTTSService /
ElevenLabsHttpTTSService and LiveKit's elevenlabs plugin send them (their code: pipecat/services/elevenlabs/tts.py,
livekit/plugins/elevenlabs/tts.py): HTTP speech and timings, voices, errors, and both sockets' messages."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest
from fastapi import WebSocketDisconnect
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from api.elevenlabs.http import TimestampedEncoder
from services.char_timings import CharTimeline, SpeakingRate
from services.encoders import AudioEncoder
from services.engine.text import sentencizer
from tests.conftest import BUILTIN_SPEAKER, app_client, app_settings
from tests.fakes import FakeEngine

pytestmark = pytest.mark.app
TEXT = "Hello there, how are you today?"
VOICE = BUILTIN_SPEAKER.replace(" ", "%20")
MULTI = (
    f"/v1/text-to-speech/{VOICE}/multi-stream-input?model_id=eleven_flash_v2_5&output_format=pcm_24000&auto_mode=false"
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    engine = FakeEngine(chunks_per_sentence=4, chunk_seconds=0.2, chunk_delay_s=0.05)
    settings = app_settings(tmp_path_factory.mktemp("elevenlabs"))
    sentencizer("en")  # loaded once, seconds: not while a test's text waits (WS_MAX_WAIT_SECONDS would cut it)
    with app_client(engine, settings) as running:
        yield running


def test_streamed_speech_in_the_format_asked_for(client: TestClient) -> None:
    body = {"text": TEXT, "model_id": "eleven_flash_v2_5", "voice_settings": {"stability": 0.5, "speed": 1.1}}
    response = client.post(f"/v1/text-to-speech/{VOICE}/stream?output_format=pcm_16000", json=body)
    assert response.status_code == 200, response.text
    assert len(response.content) == pytest.approx(0.8 * 16000 * 2, abs=64)  # one sentence: 4 chunks of 0.2 s
    response = client.post(f"/v1/text-to-speech/{VOICE}", json={"text": TEXT})
    assert response.headers["content-type"] == "audio/mpeg"  # mp3_44100_128, ElevenLabs' default
    response = client.post(f"/v1/text-to-speech/{VOICE}/stream?output_format=ulaw_8000", json={"text": TEXT})
    assert len(response.content) == pytest.approx(0.8 * 8000, abs=32)  # a byte a sample at 8 kHz


def test_with_timestamps_times_every_character_in_order(client: TestClient) -> None:
    data = client.post(f"/v1/text-to-speech/{VOICE}/with-timestamps?output_format=pcm_24000", json={"text": TEXT})
    payload = data.json()
    alignment = payload["alignment"]
    assert "".join(alignment["characters"]) == TEXT
    assert alignment["character_end_times_seconds"][-1] == pytest.approx(0.8)
    assert payload["normalized_alignment"] == alignment
    assert len(base64.b64decode(payload["audio_base64"])) == 0.8 * 24000 * 2


def test_streamed_timestamps_come_line_by_line_from_the_start_of_the_audio(client: TestClient) -> None:
    response = client.post(f"/v1/text-to-speech/{VOICE}/stream/with-timestamps?output_format=pcm_24000",
                           json={"text": TEXT})  # fmt: skip
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert len(lines) > 1
    chars = [char for line in lines for char in line.get("alignment", {}).get("characters", [])]
    assert "".join(chars) == TEXT
    ends = [end for line in lines for end in line["alignment"]["character_end_times_seconds"]]
    assert ends == sorted(ends) and ends[-1] == pytest.approx(0.8)
    assert sum(len(base64.b64decode(line["audio_base64"])) for line in lines) == 0.8 * 24000 * 2


def test_voices_in_elevenlabs_shape_and_errors_in_its_shape(client: TestClient) -> None:
    voices = client.get("/v1/voices").json()["voices"]
    assert {"voice_id": BUILTIN_SPEAKER, "name": BUILTIN_SPEAKER, "category": "premade"}.items() <= voices[0].items()
    response = client.post("/v1/text-to-speech/nobody/stream", json={"text": TEXT})
    assert response.status_code == 404
    assert response.json()["detail"]["status"] == "voice_not_found"
    response = client.post(f"/v1/text-to-speech/{VOICE}/stream?output_format=pcm_12345", json={"text": TEXT})
    assert response.status_code == 400 and "output_format" in response.json()["detail"]["message"]


def receive_until_final(socket: WebSocketTestSession) -> list[dict[str, Any]]:
    messages = []
    while True:
        messages.append(socket.receive_json())
        if messages[-1].get("isFinal") or messages[-1].get("error"):
            return messages


def spoken(messages: list[dict[str, Any]]) -> tuple[bytes, str, list[int]]:
    """(audio, the characters of the alignments joined, each message's last character end)."""
    audio, chars, ends = b"", "", []
    for message in messages:
        if message.get("audio"):
            audio += base64.b64decode(message["audio"])
        if alignment := message.get("alignment"):
            assert alignment == message["normalizedAlignment"]
            chars += "".join(alignment["chars"])
            ends.append(alignment["charStartTimesMs"][-1] + alignment["charDurationsMs"][-1])
    return audio, chars, ends


def test_pipecat_reply_is_spoken_with_timings_then_is_final(client: TestClient) -> None:
    with client.websocket_connect(MULTI) as socket:
        socket.send_json({"text": ""})  # Pipecat's keep-alive before any context
        socket.send_json({"text": " ", "context_id": "c1", "voice_settings": {"stability": 0.5, "speed": 1.0}})
        for piece in ["Hello there, ", "how are you ", "today? ", "Fine."]:
            socket.send_json({"text": piece, "context_id": "c1"})
        socket.send_json({"context_id": "c1", "flush": True})  # end of the reply: flush, then close_context
        socket.send_json({"context_id": "c1", "close_context": True})
        messages = receive_until_final(socket)
    assert messages[-1] == {"isFinal": True, "contextId": "c1"}
    assert all(message["contextId"] == "c1" for message in messages)
    audio, chars, ends = spoken(messages)
    assert chars == "Hello there, how are you today? Fine."  # every character, in order, the space between sentences
    assert len(audio) == 2 * 0.8 * 24000 * 2  # both sentences whole: the close waited for them
    assert sum(ends) == 1600  # Pipecat's clock: each message's span adds up to the audio
    assert all(end > 0 for end in ends)


def test_close_context_alone_is_a_barge_in(client: TestClient) -> None:
    with client.websocket_connect(MULTI) as socket:
        socket.send_json({"text": " ", "context_id": "a"})
        socket.send_json({"text": "A first sentence to speak. And a second one. And a third.", "context_id": "a"})
        first = socket.receive_json()
        assert first.get("audio") and first["contextId"] == "a"
        socket.send_json({"context_id": "a", "close_context": True})
        messages = receive_until_final(socket)
        assert messages[-1] == {"isFinal": True, "contextId": "a"}
        heard = len(base64.b64decode(first["audio"])) + len(spoken(messages)[0])
        assert heard < 3 * 0.8 * 24000 * 2  # stopped before the end of its three sentences
        socket.send_json({"text": " ", "context_id": "b"})  # the next reply speaks at once
        socket.send_json({"text": "Yes?", "context_id": "b", "flush": True})
        socket.send_json({"context_id": "b", "close_context": True})
        assert spoken(receive_until_final(socket))[1] == "Yes?"


def test_livekit_ends_input_with_empty_text_and_flush_then_closes(client: TestClient) -> None:
    url = (f"/v1/text-to-speech/{VOICE}/multi-stream-input?model_id=eleven_turbo_v2_5&output_format=ulaw_8000"
           "&language_code=en&enable_ssml_parsing=false&enable_logging=true&inactivity_timeout=180"
           "&apply_text_normalization=auto&sync_alignment=true&auto_mode=true")  # fmt: skip
    with client.websocket_connect(url, headers={"xi-api-key": "unused"}) as socket:
        socket.send_json({"text": " ", "voice_settings": None, "context_id": "lk1"})
        socket.send_json({"text": "Hi there. ", "context_id": "lk1", "flush": True})
        socket.send_json({"text": "", "context_id": "lk1", "flush": True})
        socket.send_json({"context_id": "lk1", "close_context": True})
        audio, chars, _ = spoken(receive_until_final(socket))
    assert chars == "Hi there."
    assert len(audio) == 0.8 * 8000  # mu-law: a byte a sample at 8 kHz


def test_stream_input_speaks_until_empty_text_then_closes(client: TestClient) -> None:
    with client.websocket_connect(f"/v1/text-to-speech/{VOICE}/stream-input?output_format=pcm_22050") as socket:
        socket.send_json({"text": " ", "voice_settings": {"speed": 1.0}, "try_trigger_generation": True})
        socket.send_json({"text": "Short one. ", "try_trigger_generation": False})
        socket.send_json({"text": ""})
        messages = receive_until_final(socket)
        assert messages[-1] == {"isFinal": True}
        assert "contextId" not in messages[0]
        assert spoken(messages)[1] == "Short one."
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert closed.value.code == 1000


def test_bad_input_is_an_error_message_and_a_bad_voice_closes(client: TestClient) -> None:
    with client.websocket_connect(MULTI) as socket:
        socket.send_text("not json")
        error = socket.receive_json()
        assert error["error"] == "invalid_input" and error["message"]
    with client.websocket_connect("/v1/text-to-speech/nobody/multi-stream-input") as socket:
        assert socket.receive_json()["error"] == "voice_not_found"
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert closed.value.code == 1008


def test_small_client_fixes(client: TestClient) -> None:
    seed_body = {"request": {"text": TEXT, "language": "en", "speaker_id": BUILTIN_SPEAKER},
                 "options": {"stream_chunk_size": 20}}  # fmt: skip
    assert client.post("/tts_stream", json=seed_body).status_code == 200
    body = {"model": "tts-1", "input": TEXT, "voice": "marin", "response_format": "ulaw"}
    response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "audio/basic"
    assert response.headers["x-sample-rate"] == "8000" and len(response.content) == pytest.approx(6400, abs=32)
    response = client.post("/tts_stream", json={"text": TEXT, "language": "en", "speaker_id": BUILTIN_SPEAKER,
                                                "output_format": "alaw"})  # fmt: skip
    assert response.headers["x-sample-rate"] == "8000" and len(response.content) == pytest.approx(6400, abs=32)


def test_studio_speakers_list_saved_voices_and_follow_their_changes(client: TestClient) -> None:
    latents = client.get("/studio_speakers").json()["Dummy Tenor"]
    assert client.post("/save_voice/pipecat-clone", json=latents).status_code == 201
    speakers = client.get("/studio_speakers").json()
    assert speakers["pipecat-clone"] == latents and "Dummy Tenor" in speakers  # same shape as a built-in
    client.delete("/saved_voices/pipecat-clone")
    assert "pipecat-clone" not in client.get("/studio_speakers").json()


def test_seed_in_the_query_makes_the_audio_of_the_same_seed_over_http(client: TestClient) -> None:
    def socket_audio(seed: str) -> bytes:
        with client.websocket_connect(f"{MULTI}&seed={seed}") as socket:
            socket.send_json({"text": " ", "context_id": "s"})
            socket.send_json({"text": "Hi there.", "context_id": "s", "flush": True})
            socket.send_json({"context_id": "s", "close_context": True})
            return spoken(receive_until_final(socket))[0]

    body = {"text": "Hi there.", "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 7, "output_format": "pcm"}
    over_http = client.post("/tts_stream", json=body).content
    assert socket_audio("7") == over_http != socket_audio("8")  # (the bench compares first audio at equal seeds)
    with client.websocket_connect(f"{MULTI}&seed=-1") as socket:
        assert "seed must be a whole number" in socket.receive_json()["message"]


def test_streamed_timestamps_in_mp3_carry_every_sample_including_the_held_back_end() -> None:
    # The last 80 ms are held back until the end so the last character ends with its audio: they must be encoded
    # before the mp3 encoder is flushed (flushing first raised EOFError and cut the stream short).
    encoder = TimestampedEncoder(AudioEncoder("mp3", 44_100), CharTimeline(TEXT, SpeakingRate(), 1.0))
    noise = (np.random.default_rng(0).uniform(-0.3, 0.3, 24_000) * 32767).astype("<i2").tobytes()
    pieces = [noise[i : i + 12_000] for i in range(0, len(noise), 12_000)]  # four quarter-seconds
    out = encoder.start() + b"".join(encoder.encode(piece) for piece in pieces) + encoder.finish()
    lines = [json.loads(line) for line in out.splitlines() if line]
    mp3 = b"".join(base64.b64decode(line["audio_base64"]) for line in lines)
    with av.open(io.BytesIO(mp3)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples / 44_100 == pytest.approx(1.0, abs=0.06)  # all of it, the held-back end included
    assert "".join(char for line in lines for char in line.get("alignment", {}).get("characters", [])) == TEXT
