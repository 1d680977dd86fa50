"""Errors on the wire: stable codes, one status table, and each API family's own shape."""

from __future__ import annotations

import inspect

import pytest
from fastapi.testclient import TestClient

from api.errors import STATUS_BY_ERROR, headers_for, service_error_response, status_for
from services import errors

# The wire contract: clients match on these codes, so a rename of a class must not change them.
WIRE_CODES = {
    errors.InvalidInput: ("invalid_input", 400),
    errors.UnsupportedLanguage: ("unsupported_language", 400),
    errors.InvalidAudio: ("invalid_audio", 400),
    errors.HostNotAllowed: ("host_not_allowed", 400),
    errors.Unauthorized: ("unauthorized", 401),
    errors.Forbidden: ("forbidden", 403),
    errors.VoiceNotFound: ("voice_not_found", 404),
    errors.ModelNotFound: ("model_not_found", 404),
    errors.SessionNotFound: ("session_not_found", 404),
    errors.JobNotFound: ("job_not_found", 404),
    errors.JobNotFinished: ("job_not_finished", 409),
    errors.TooManyJobs: ("too_many_jobs", 429),
    errors.VoiceExists: ("voice_exists", 409),
    errors.SessionConflict: ("session_conflict", 409),
    errors.PayloadTooLarge: ("payload_too_large", 413),
    errors.UnsupportedMediaType: ("unsupported_media_type", 415),
    errors.InvalidVoiceId: ("invalid_voice_id", 422),
    errors.InvalidLatents: ("invalid_latents", 422),
    errors.Overloaded: ("overloaded", 429),
    errors.VoiceUnreadable: ("voice_unreadable", 500),
    errors.NotReady: ("not_ready", 503),
    errors.IdleTimeout: ("idle_timeout", 408),
    errors.UnsupportedData: ("unsupported_data", 415),
    errors.ServerPathRefused: ("server_path_refused", 403),
}


def raised_errors() -> list[type[errors.ServiceError]]:
    """Every concrete error class the services can raise."""
    return [
        cls
        for _name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ServiceError) and cls not in (errors.ServiceError, errors.RetryLater)
    ]


def test_every_error_has_its_own_stable_code_and_a_status() -> None:
    classes = raised_errors()
    assert set(classes) == set(WIRE_CODES) == set(STATUS_BY_ERROR)
    for cls in classes:
        assert "code" in cls.__dict__, f"{cls.__name__} inherits its wire code"
        error = cls("x", retry_after_s=3) if issubclass(cls, errors.RetryLater) else cls("x")
        assert (error.code, status_for(error)) == WIRE_CODES[cls], cls.__name__


def test_retry_later_errors_carry_their_own_retry_after() -> None:
    for cls in (errors.Overloaded, errors.NotReady, errors.TooManyJobs):
        assert headers_for(cls("busy", retry_after_s=7)) == {"Retry-After": "7"}
    assert headers_for(errors.VoiceNotFound("x")) is None


def test_our_shape_and_openais_shape() -> None:
    error = errors.VoiceNotFound("no saved voice 'x'", voice_id="x")
    ours = service_error_response("/tts_stream", error)
    assert ours.status_code == 404
    assert ours.body == b'{"error":"voice_not_found","message":"no saved voice \'x\'","details":{"voice_id":"x"}}'
    openai = service_error_response("/v1/audio/speech", errors.ModelNotFound("no model", param="model"))
    assert openai.status_code == 404
    assert openai.body == (
        b'{"error":{"message":"no model","type":"invalid_request_error","param":"model","code":"model_not_found"}}'
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/clone_speaker", lambda body: body["error"] == "payload_too_large" and body["details"]["limit_bytes"]),
        ("/v1/audio/speech", lambda body: body["error"]["code"] == "payload_too_large"),
    ],
)
def test_a_body_over_max_upload_mb_is_413_in_its_familys_shape(fake_client: TestClient, path: str, expected) -> None:  # type: ignore[no-untyped-def]
    response = fake_client.post(path, content=b"x" * 2_000_100, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert expected(response.json()), response.json()
    assert fake_client.get("/health").status_code == 200


def test_validation_errors_name_the_field_in_both_shapes(fake_client: TestClient) -> None:
    ours = fake_client.post("/tts_stream", json={"text": "Hi", "language": "en", "speaker_id": "x", "speed": 9})
    assert ours.status_code == 422 and ours.json()["details"][0]["field"] == "speed"
    theirs = fake_client.post("/v1/audio/speech", json={"input": "Hi", "voice": "alloy", "speed": 9})
    assert theirs.status_code == 422 and theirs.json()["error"]["param"] == "speed"


def test_unknown_routes_and_methods_are_json(fake_client: TestClient) -> None:
    assert fake_client.get("/no/such/thing").json()["error"] == "not_found"
    assert fake_client.put("/tts").json()["error"] == "method_not_allowed"
