"""xtts-api-server's API under /xtts-api, with requests shaped exactly as SillyTavern's "XTTSv2" provider sends
them (public/scripts/extensions/tts/xtts.js): in-process for the shapes, a real uvicorn for streaming, and
headless Chromium playing the stream from an <audio> element as SillyTavern's streaming mode does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient

from api.state import app_state
from tests.audio_checks import assert_complete_wav, assert_pcm_wav
from tests.conftest import BUILTIN_SPEAKER, Server
from tests.test_demo_page import CHROMIUM, CHROMIUM_FLAGS

API = "/xtts-api"
# xtts.js: headers of every POST; the settings as jQuery .val() leaves them after a slider moved (strings)
ST_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-cache"}
ST_SETTINGS = {
    "temperature": "0.65", "speed": "1", "length_penalty": "1", "repetition_penalty": "5", "top_p": "0.85",
    "top_k": "50", "enable_text_splitting": True, "stream_chunk_size": "100",
}  # fmt: skip


@pytest.fixture
def client(fake_client: TestClient) -> Iterator[TestClient]:
    yield fake_client
    fake_client.post(f"{API}/set_tts_settings", json={"temperature": 0.75, "speed": 1.0})


def test_speakers_list_every_voice_with_a_playable_preview(client: TestClient) -> None:
    latents = client.get("/studio_speakers").json()["Dummy Tenor"]
    assert client.post("/save_voice/st-voice", json={**latents, "overwrite": True}).status_code == 201
    speakers = client.get(f"{API}/speakers").json()
    assert isinstance(speakers, list)  # a bare array: xtts.js returns response.json() as the voice list
    by_id = {speaker["voice_id"]: speaker for speaker in speakers}
    assert {"st-voice", BUILTIN_SPEAKER} <= set(by_id)
    assert all(speaker["name"] == speaker["voice_id"] for speaker in speakers)
    assert client.get(f"{API}/speakers_list").json() == [speaker["voice_id"] for speaker in speakers]

    engine = app_state(client.app).model.engine  # type: ignore[arg-type,union-attr]
    preview = by_id[BUILTIN_SPEAKER]["preview_url"]
    assert preview == "http://testserver/xtts-api/sample/Dummy%20Alto.wav"  # absolute: the browser loads it as is
    first = client.get(urlsplit(preview).path)
    assert first.status_code == 200 and first.headers["content-type"] == "audio/wav"
    assert_complete_wav(first.content)
    made = engine.chunks_made
    assert client.get(urlsplit(preview).path).content == first.content and engine.chunks_made == made  # kept
    missing = client.get(f"{API}/sample/nobody.wav")
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]


def test_languages_in_upstreams_shape(client: TestClient) -> None:
    languages = client.get(f"{API}/languages").json()["languages"]
    assert len(languages) == 17 and languages["Chinese"] == "zh-cn" and languages["English"] == "en"


def test_settings_as_sillytavern_sends_them(client: TestClient) -> None:
    answer = client.post(f"{API}/set_tts_settings", json=ST_SETTINGS, headers=ST_HEADERS)
    assert answer.status_code == 200 and answer.json() == {"message": "Settings successfully applied"}
    settings = client.get(f"{API}/get_tts_settings").json()
    assert settings["temperature"] == 0.65 and settings["top_k"] == 50 and settings["stream_chunk_size"] == 100
    refused = client.post(f"{API}/set_tts_settings", json={**ST_SETTINGS, "top_p": "0", "temperature": "0.5"})
    assert refused.status_code == 422 and "top_p" in refused.json()["detail"]
    assert client.get(f"{API}/get_tts_settings").json()["temperature"] == 0.65  # nothing of a refused update


@pytest.mark.parametrize("path", ["/tts_to_audio/", "/tts_to_audio"])
@pytest.mark.parametrize("speaker_wav", [BUILTIN_SPEAKER, f"{BUILTIN_SPEAKER}.wav"])
def test_tts_to_audio_answers_a_wav(client: TestClient, path: str, speaker_wav: str) -> None:
    body = {"text": "Hello there, how are you?", "speaker_wav": speaker_wav, "language": "en"}
    answer = client.post(f"{API}{path}", json=body, headers=ST_HEADERS)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("audio/")  # xtts.js requires it
    assert_complete_wav(answer.content)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": "Hi.", "speaker_wav": "nobody", "language": "en"}, 404),
        ({"text": "Hi.", "speaker_wav": "../../etc/passwd.wav", "language": "en"}, 404),
        ({"text": "Hi.", "speaker_wav": BUILTIN_SPEAKER, "language": "xx"}, 422),
        ({"text": "", "speaker_wav": BUILTIN_SPEAKER, "language": "en"}, 422),
    ],
)
def test_bad_requests_are_4xx_with_upstreams_detail(client: TestClient, body: dict[str, str], status: int) -> None:
    answer = client.post(f"{API}/tts_to_audio/", json=body)
    assert answer.status_code == status and answer.json()["detail"]


def test_the_settings_apply_to_this_apis_speech(tiny_client: TestClient) -> None:
    body = {"text": "Hello there, how are you?", "speaker_wav": BUILTIN_SPEAKER, "language": "en"}
    normal = assert_complete_wav(tiny_client.post(f"{API}/tts_to_audio/", json=body).content)
    try:
        assert tiny_client.post(f"{API}/set_tts_settings", json={**ST_SETTINGS, "speed": "2"}).status_code == 200
        fast = assert_complete_wav(tiny_client.post(f"{API}/tts_to_audio/", json=body).content)
    finally:
        tiny_client.post(f"{API}/set_tts_settings", json={"speed": 1.0, "temperature": 0.75})
    assert fast.size < 0.7 * normal.size  # the same capped token count, spoken twice as fast


def stream_url(server_url: str, speaker: str, text: str) -> str:
    # xtts.js: `${provider_endpoint}/tts_stream/?${new URLSearchParams({text, speaker_wav, language})}`
    return f"{server_url}{API}/tts_stream/?" + urlencode({"text": text, "speaker_wav": speaker, "language": "en"})


def test_get_stream_sends_audio_before_it_ends(server: Server) -> None:
    text = "First sentence of a stream. A second one follows it. And a third one to finish."
    arrivals: list[float] = []
    body = b""
    with server.client() as http, http.stream("GET", stream_url(server.url, BUILTIN_SPEAKER, text)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("audio/")
        started = time.perf_counter()
        for chunk in response.iter_raw():
            body += chunk
            arrivals.append(time.perf_counter() - started)
    assert_pcm_wav(body, min_seconds=0.5)
    assert len(arrivals) > 2 and arrivals[0] < arrivals[-1] / 2


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")
def test_an_audio_element_plays_the_stream_as_sillytavern_streams(server: Server) -> None:
    from playwright.sync_api import sync_playwright

    url = stream_url(server.url, BUILTIN_SPEAKER, "Hello from the audio element. It plays while it streams.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(f"{server.url}/health")
        played = page.evaluate(
            """url => new Promise(resolve => {
                const audio = new Audio();  // index.js: audioElement.src = url, play() on canplay
                audio.addEventListener("canplay", () => audio.play());
                audio.addEventListener("ended", () => resolve({ended: true, duration: audio.duration}));
                audio.addEventListener("error", () => resolve({error: audio.error && audio.error.code}));
                audio.src = url;
                setTimeout(() => resolve({timeout: true, time: audio.currentTime}), 60000);
            })""",
            url,
        )
        browser.close()
    assert played.get("ended") is True, played
