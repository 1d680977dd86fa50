"""Cross-origin access: CORS_ALLOW_ORIGINS, in-process for every route's preflight and in headless Chromium
for what a page on another origin can actually do."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import LiveServer, app_client, app_settings, free_port, live_server
from tests.fakes import FAKE_SPEAKERS, FakeEngine
from tests.test_demo_page import CHROMIUM, CHROMIUM_FLAGS

PAGE_ORIGIN = "http://127.0.0.1:{port}"
EXPOSED = {"x-session-id", "x-seed", "x-sample-rate", "x-language", "retry-after", "content-disposition", "x-replica"}


@pytest.fixture(scope="module")
def allowed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = app_settings(tmp_path_factory.mktemp("cors"), CORS_ALLOW_ORIGINS="http://app.example, http://b.example/")
    with app_client(FakeEngine(), settings) as client:
        yield client


def preflight(client: TestClient, path: str, method: str, origin: str = "http://app.example"):  # type: ignore[no-untyped-def]
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type, authorization, x-api-key",
        },
    )


def test_every_route_answers_the_preflight_of_an_allowed_origin(allowed: TestClient) -> None:
    paths = allowed.get("/openapi.json").json()["paths"]
    assert len(paths) > 15
    for template, operations in paths.items():
        path = template.replace("{file_name}", "a.wav")
        path = path.replace("{voice_id}", "v1").replace("{session_id}", "s1")
        for method in (name.upper() for name in operations):
            answer = preflight(allowed, path, method)
            assert answer.status_code == 200, (method, path, answer.text)
            assert answer.headers["access-control-allow-origin"] == "http://app.example"
            assert method in answer.headers["access-control-allow-methods"]
            assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    # the second origin was configured with a trailing slash, which browsers never send
    assert preflight(allowed, "/tts_stream", "POST", "http://b.example").status_code == 200


def test_a_response_to_an_allowed_origin_exposes_the_stream_headers(allowed: TestClient) -> None:
    body = {"text": "Hi.", "language": "en", "speaker_id": FAKE_SPEAKERS[0]}
    answer = allowed.post("/tts_stream", json=body, headers={"Origin": "http://app.example"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "http://app.example"
    assert set(answer.headers["access-control-expose-headers"].lower().split(", ")) == EXPOSED
    # errors carry the headers too, so the page can read them
    refused = allowed.post("/tts_stream", json={"text": ""}, headers={"Origin": "http://app.example"})
    assert refused.status_code == 422 and refused.headers["access-control-allow-origin"] == "http://app.example"


def test_other_origins_get_no_cors_grant(allowed: TestClient, fake_client: TestClient) -> None:
    assert preflight(allowed, "/tts_stream", "POST", "http://evil.example").status_code == 400
    answer = allowed.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in answer.headers
    # default: no origin at all
    assert preflight(fake_client, "/tts_stream", "POST").status_code == 405
    plain = fake_client.get("/health", headers={"Origin": "http://app.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_a_star_allows_any_origin_and_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with app_client(FakeEngine(), app_settings(tmp_path, CORS_ALLOW_ORIGINS="*")) as client:
        answer = preflight(client, "/tts_stream", "POST", "http://any.example")
        assert answer.headers["access-control-allow-origin"] == "*"
    assert "CORS_ALLOW_ORIGINS=*" in caplog.text


PAGE = """<!doctype html><title>other origin</title><script>
window.speak = async (server) => {
  const result = {};
  try {
    const response = await fetch(server + "/tts_stream", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({text: "One sentence. And another one.", language: "en", speaker_id: "SPEAKER"}),
    });
    result.status = response.status;
    result.session = response.headers.get("X-Session-ID");
    const reader = response.body.getReader();
    result.bytes = 0; result.reads = 0;
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      result.bytes += value.length; result.reads++;
    }
    const saved = await fetch(server + "/save_voice/from-page", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({gpt_cond_latent: [[0.5]], speaker_embedding: [1]})});
    result.saveStatus = saved.status;
  } catch (error) { result.error = String(error); }
  return result;
};
</script>""".replace("SPEAKER", FAKE_SPEAKERS[0])


@pytest.fixture(scope="module")
def page_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A static page on its own port: another origin than the speech server."""
    folder = tmp_path_factory.mktemp("page")
    (folder / "index.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield port
    httpd.shutdown()


@pytest.fixture(scope="module")
def cors_server(page_host: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    engine = FakeEngine(chunks_per_sentence=4, chunk_delay_s=0.01)
    settings = app_settings(tmp_path_factory.mktemp("cors-live"), CORS_ALLOW_ORIGINS=PAGE_ORIGIN.format(port=page_host))
    with live_server(engine, settings) as running:
        yield running


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")
@pytest.mark.parametrize("page_hostname", ["127.0.0.1", "localhost"], ids=["allowed", "other-origin"])
def test_a_page_on_another_origin_streams_only_when_allowed(
    page_host: int, cors_server: LiveServer, page_hostname: str
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(f"http://{page_hostname}:{page_host}/index.html")
        result = page.evaluate("server => window.speak(server)", cors_server.url)
        browser.close()
    if page_hostname == "127.0.0.1":  # the allowed origin
        assert result.get("error") is None, result
        assert result["status"] == 200 and result["session"] and result["bytes"] > 44 and result["reads"] > 1
        assert result["saveStatus"] in (201, 422)  # the preflighted JSON POST went through (the fake's shapes)
    else:  # http://localhost:port is another origin: the browser refuses to hand over the answer
        assert "Failed to fetch" in result.get("error", ""), result
