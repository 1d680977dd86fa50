"""Integers only where the schema says integer (each API family as its real clients send), the client's values
clipped wherever an error repeats them, and a malformed query string refused before any work (in-process, fake
engine)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from models.inputs import parse_socket_message
from services.errors import InvalidInput
from tests.conftest import BUILTIN_SPEAKER

MEGABYTE = 1_000_000


def speech(**extra: object) -> dict[str, object]:
    return {"text": "Hi.", "language": "en", "speaker_id": BUILTIN_SPEAKER, **extra}


def openai_speech(**extra: object) -> dict[str, object]:
    return {"model": "tts-1", "input": "Hi.", "voice": "alloy", **extra}


def model_jobs(client: TestClient) -> int:
    return int(client.get("/health").json()["requests"]["model_jobs"])


# -- strict numbers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", True),
        ("top_k", "1_000"),
        ("top_k", "50"),
        ("top_k", 50.0),
        ("seed", True),
        ("seed", "1_000"),
        ("sample_rate", "24000"),
        ("stream_chunk_size", True),
        ("stream_chunk_size", "1_00"),
        ("stream_chunk_size", " 20"),
        ("temperature", True),
        ("temperature", "0.5"),
        ("enable_text_splitting", "yes"),
        ("add_wav_header", 0),
    ],
)
def test_our_json_takes_json_numbers_and_booleans_only(fake_client: TestClient, field: str, value: object) -> None:
    jobs = model_jobs(fake_client)
    for path in ("/tts_stream", "/tts"):
        response = fake_client.post(path, json=speech(**{field: value}))
        assert response.status_code == 422, (path, field, value, response.text)
        assert response.json()["details"][0]["field"] == field
    assert model_jobs(fake_client) == jobs


def test_our_json_still_takes_what_its_clients_send(fake_client: TestClient) -> None:
    # coqui's xtts-streaming-server declares stream_chunk_size a string: its clients send "20"
    for extra in ({"stream_chunk_size": "20"}, {"top_k": 0, "temperature": 1, "seed": 2**63 - 1}):
        assert fake_client.post("/tts_stream", json=speech(**extra)).status_code == 200, extra


@pytest.mark.parametrize(
    ("field", "value"), [("seed", True), ("seed", "1_000"), ("seed", "7"), ("speed", True), ("speed", "1.5")]
)
def test_openai_json_takes_json_numbers_only(fake_client: TestClient, field: str, value: object) -> None:
    response = fake_client.post("/v1/audio/speech", json=openai_speech(**{field: value}))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == field
    assert fake_client.post("/v1/audio/speech", json=openai_speech(speed=2, seed=7)).status_code == 200


@pytest.mark.parametrize("value", [True, "1_000", "50"])
def test_the_sockets_config_takes_json_numbers_only(value: object) -> None:
    config = {"type": "config", "language": "en", "speaker_id": BUILTIN_SPEAKER, "top_k": value}
    with pytest.raises(InvalidInput, match="top_k"):
        parse_socket_message(json.dumps(config))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", "1_000"),
        ("top_k", True),
        ("top_k", "5.0"),
        ("top_k", " 5"),
        ("top_k", "\u0665"),
        ("temperature", True),
    ],
)
def test_xtts_api_settings_take_numbers_or_plain_decimal_text(
    fake_client: TestClient, field: str, value: object
) -> None:
    before = fake_client.get("/xtts-api/get_tts_settings").json()
    refused = fake_client.post("/xtts-api/set_tts_settings", json={field: value})
    assert refused.status_code == 422 and field in refused.json()["detail"]
    assert fake_client.get("/xtts-api/get_tts_settings").json() == before


def test_xtts_api_settings_as_sillytavern_sends_them_still_apply(fake_client: TestClient) -> None:
    sent = {
        "top_k": "5",
        "temperature": "0.5",
        "speed": "1",
        "stream_chunk_size": 100,
        "enable_text_splitting": "false",
    }
    assert fake_client.post("/xtts-api/set_tts_settings", json=sent).status_code == 200
    settings = fake_client.get("/xtts-api/get_tts_settings").json()
    assert {name: settings[name] for name in sent} == {
        "top_k": 5, "temperature": 0.5, "speed": 1.0, "stream_chunk_size": 100, "enable_text_splitting": False
    }  # fmt: skip


def test_clone_options_take_json_numbers_only(fake_client: TestClient) -> None:
    upload = {"wav_file": ("a.wav", b"RIFF")}
    response = fake_client.post("/clone_speaker", files=upload, data={"options": '{"gpt_cond_len": true}'})
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "options.gpt_cond_len"


# -- bounded echoes ---------------------------------------------------------------------------------------------


def test_a_long_model_name_is_not_echoed_whole(fake_client: TestClient) -> None:
    response = fake_client.post("/v1/audio/speech", json=openai_speech(model="m" * MEGABYTE))
    assert response.status_code == 404 and len(response.content) < 1000
    message = response.json()["error"]["message"]
    assert message.startswith("the model '" + "m" * 100 + "'…") and "/v1/models" in message


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tts_stream", speech(language="x" * MEGABYTE)),
        ("/v1/audio/speech", openai_speech(language="x" * MEGABYTE)),
        ("/xtts-api/tts_to_audio/", {"text": "Hi.", "speaker_wav": BUILTIN_SPEAKER, "language": "x" * MEGABYTE}),
    ],
)
def test_a_long_value_in_a_validation_error_is_clipped(fake_client: TestClient, path: str, body: dict) -> None:
    response = fake_client.post(path, json=body)
    assert response.status_code == 422 and len(response.content) < 2000, len(response.content)
    assert "'" + "x" * 100 + "'…" in json.dumps(response.json(), ensure_ascii=False)


def test_a_long_unknown_key_is_clipped(fake_client: TestClient) -> None:
    options = json.dumps({"k" * 200_000: 1})
    response = fake_client.post("/clone_speaker", files={"wav_file": ("a.wav", b"RIFF")}, data={"options": options})
    assert response.status_code == 422 and len(response.content) < 2000, len(response.content)


def test_a_long_name_in_a_services_error_is_clipped(fake_client: TestClient) -> None:
    response = fake_client.get("/xtts-api/sample/" + "v" * 20_000 + ".wav")
    assert 400 <= response.status_code < 500 and len(response.content) < 3000, len(response.content)


def test_a_socket_message_of_a_long_unknown_type_is_clipped() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_socket_message(json.dumps({"type": "t" * MEGABYTE}))
    assert len(raised.value.message) < 300


# -- malformed query strings ------------------------------------------------------------------------------------


def xtts_stream_url(query: bytes) -> str:
    return "/xtts-api/tts_stream?" + (query + b"&speaker_wav=Dummy%20Alto&language=en").decode()


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        (b"text=%zz", "'%zz'"),
        (b"text=100%", "'%'"),
        (b"text=caf%e9", "UTF-8"),
        (b"te%zzxt=Hi", "'%zz'"),
    ],
)
def test_a_malformed_query_is_422_before_any_work(fake_client: TestClient, query: bytes, needle: str) -> None:
    jobs = model_jobs(fake_client)
    response = fake_client.get(xtts_stream_url(query))
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "validation_error" and needle in error["detail"], error
    assert error["details"][0]["field"].startswith("te")
    assert model_jobs(fake_client) == jobs


def test_a_well_formed_query_still_speaks(fake_client: TestClient) -> None:
    for text in (b"100%25+sure%21", b"caf%C3%A9.", b"Hi."):
        response = fake_client.get(xtts_stream_url(b"text=" + text))
        assert response.status_code == 200 and response.headers["content-type"] == "audio/wav", response.text


def test_a_malformed_query_is_422_in_openais_shape(fake_client: TestClient) -> None:
    response = fake_client.get("/v1/models?owner=%zz")
    assert response.status_code == 422 and response.json()["error"]["param"] == "owner"
