"""api/system.py in-process: /health, /ready, /languages, /available_speakers, the docs, and readiness while
the model loads."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from fastapi.testclient import TestClient

from main import create_app
from tests.conftest import BUILTIN_SPEAKER, app_settings, wait_for
from tests.fakes import FakeEngine


def speech(text: str) -> dict[str, object]:
    return {"text": text, "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 1}


def test_info_endpoints(tiny_client: TestClient) -> None:
    """With the tiny model (the start-up log's warning about its random weights: tests/test_startup.py)."""
    client = tiny_client
    assert client.get("/available_speakers").json() == sorted(["Dummy Alto", "Dummy Bass", "Dummy Tenor"])
    languages = client.get("/languages").json()
    assert len(languages) == 17 and "zh-cn" in languages and "ja" in languages
    health = client.get("/health").json()
    assert health["status"] == "ready"
    assert health["model"]["dummy"] is True and health["model"]["source"] == "dummy:tiny"
    assert "noise" in health["warning"]
    assert health["requests"]["capacity"] == 8  # MAX_CONCURRENT_REQUESTS (10), at most the batch rows (8 on a CPU)
    assert client.get("/ready").status_code == 200
    docs = client.get("/")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # Swagger UI's script and styles come from this server, not a CDN
    for asset in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', docs.text):
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/tts_stream", "/tts", "/languages", "/available_speakers", "/health"} <= set(paths)


def test_readiness_is_503_while_loading_then_200(tmp_path: Path) -> None:
    loaded = threading.Event()
    engine = FakeEngine(hold_warm_up=loaded)
    # the lifespan loads the model in the background: the app answers while it loads
    with TestClient(create_app(app_settings(tmp_path), engine=engine), raise_server_exceptions=False) as loading:
        ready = loading.get("/ready")
        assert (ready.status_code, ready.json()["status"]) == (503, "loading")
        assert loading.get("/health").json()["status"] == "loading"
        early = loading.post("/tts_stream", json=speech("Early."))
        assert early.status_code == 503 and early.json()["error"] == "not_ready"
        assert int(early.headers["retry-after"]) >= 1
        assert engine.jobs_submitted == 0
        loaded.set()
        wait_for(lambda: loading.get("/ready").status_code == 200, what="ready")
        assert loading.get("/ready").json() == {"ready": True, "status": "ready"}
        assert loading.post("/tts_stream", json=speech("Now.")).status_code == 200
