"""Random request bodies never get a 5xx: bad input is a 4xx, and the server keeps serving (in-process, fake engine)."""

from __future__ import annotations

import json
from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BUILTIN_SPEAKER

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
SPEECH_FIELDS = ["text", "language", "speaker_id", "temperature", "top_p", "top_k", "repetition_penalty", "speed",
                 "stream_chunk_size", "seed", "output_format", "sample_rate", "session_id", "gpt_cond_latent",
                 "speaker_embedding", "add_wav_header", "enable_text_splitting", "length_penalty"]  # fmt: skip
VALID = {"text": "Hi.", "language": "en", "speaker_id": BUILTIN_SPEAKER, "stream_chunk_size": 20}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    overrides=st.dictionaries(st.sampled_from(SPEECH_FIELDS), JSON_VALUES, max_size=4),
    path=st.sampled_from(["/tts_stream", "/tts", "/v1/audio/speech"]),
)
def test_random_speech_bodies_never_get_a_5xx(fake_client: TestClient, overrides: dict, path: str) -> None:
    body = {**VALID, **overrides}
    if path == "/v1/audio/speech":
        body = {"model": "tts-1", "input": body.pop("text"), "voice": body.pop("speaker_id"), **body}
    response = fake_client.post(path, json=body)
    assert response.status_code < 500, (body, response.status_code, response.text[:300])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    options=st.one_of(st.text(max_size=40), JSON_VALUES.map(json.dumps)),
    data=st.binary(max_size=3000),
    voice_id=st.text(max_size=70),
)
def test_random_uploads_and_ids_never_get_a_5xx(
    fake_client: TestClient, options: str, data: bytes, voice_id: str
) -> None:
    client = fake_client
    clone = client.post("/clone_speaker", files={"wav_file": ("x.bin", data)}, data={"options": options})
    assert clone.status_code < 500, clone.text[:300]
    path_id = "/saved_voices/" + quote(voice_id, safe="")
    for response in (client.get(path_id), client.delete(path_id)):
        assert response.status_code < 500, (voice_id, response.status_code, response.text[:300])
