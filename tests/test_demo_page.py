"""The /demo page in headless Chromium (Debian's), driven by Playwright, against a real uvicorn."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audio_checks import make_clip
from tests.conftest import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)"
)
# Offline machine: keep Chromium from calling home (its refused connections are slow and noisy).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
LONG_TEXT = " ".join(f"Sentence number {index} is here to make the stream last a little while." for index in range(10))


@pytest.fixture(scope="module")
def browser_page(server: Server) -> Iterator[tuple[object, list[str]]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
        )
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(f"{server.url}/demo")
        page.wait_for_function("window.demoState && window.demoState.voices.length > 0")
        yield page, problems
        browser.close()


def test_page_loads_without_console_errors(browser_page: tuple[object, list[str]]) -> None:
    page, problems = browser_page
    assert page.title() == "XTTS streaming demo"  # type: ignore[attr-defined]
    assert page.is_visible("#dummy-warning")  # type: ignore[attr-defined]
    assert page.locator("#language option").count() == 17  # type: ignore[attr-defined]
    assert problems == []


def test_clone_a_voice_then_hear_it_stream(browser_page: tuple[object, list[str]], tmp_path: Path) -> None:
    page, problems = browser_page
    page.set_input_files("#clip", str(make_clip(tmp_path, "wav")))  # type: ignore[attr-defined]
    page.fill("#voice-id", "browser-voice")  # type: ignore[attr-defined]
    page.click("#clone")  # type: ignore[attr-defined]
    page.wait_for_function("window.demoState.voices.includes('browser-voice')", timeout=60_000)  # type: ignore[attr-defined]
    assert page.input_value("#voice") == "browser-voice"  # type: ignore[attr-defined]
    page.fill("#text", LONG_TEXT)  # type: ignore[attr-defined]
    page.click("#speak")  # type: ignore[attr-defined]
    page.wait_for_function("window.demoState.doneAt !== null", timeout=120_000)  # type: ignore[attr-defined]
    state = page.evaluate("window.demoState")  # type: ignore[attr-defined]
    assert state["outcome"] == "ended" and state["bytes"] > 48000
    # audio reached the page, and was scheduled for playback, long before the stream ended
    assert state["firstAudioAt"] - state["startedAt"] < (state["doneAt"] - state["startedAt"]) / 3
    assert state["buffersScheduled"] > 3
    page.wait_for_function("window.demoState.lastStatus && window.demoState.lastStatus.state === 'completed'")  # type: ignore[attr-defined]
    assert problems == []


def test_cancel_from_the_page(browser_page: tuple[object, list[str]]) -> None:
    page, problems = browser_page
    page.fill("#text", LONG_TEXT * 2)  # type: ignore[attr-defined]
    page.click("#speak")  # type: ignore[attr-defined]
    page.wait_for_function("window.demoState.bytes > 20000", timeout=60_000)  # type: ignore[attr-defined]
    page.click("#cancel")  # type: ignore[attr-defined]
    page.wait_for_function("window.demoState.doneAt !== null", timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "window.demoState.lastStatus && window.demoState.lastStatus.state === 'cancelled'", timeout=10_000
    )
    assert "cancelled" in page.text_content("#status")  # type: ignore[attr-defined]
    # a cancelled stream ends without HTTP's final chunk (so it cannot pass for complete): Chromium says so
    assert [problem for problem in problems if "ERR_INCOMPLETE_CHUNKED_ENCODING" not in problem] == []


def test_agent_mode_types_into_the_socket_and_plays_before_the_typing_ends(
    browser_page: tuple[object, list[str]],
) -> None:
    page, problems = browser_page
    page.fill("#text", "First sentence is short. " + LONG_TEXT)  # type: ignore[attr-defined]
    page.fill("#words-per-second", "20")  # type: ignore[attr-defined]
    page.click("#type-speak")  # type: ignore[attr-defined]
    page.wait_for_function("window.socketState.firstAudioAt !== null", timeout=60_000)  # type: ignore[attr-defined]
    state = page.evaluate("window.socketState")  # type: ignore[attr-defined]
    assert state["typedAllAt"] is None  # audio played while the text was still being typed
    page.click("#socket-stop")  # type: ignore[attr-defined]
    page.wait_for_function("window.socketState.outcome !== null", timeout=10_000)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "window.socketState.events.some(event => event.type === 'cleared')", timeout=10_000
    )
    assert [problem for problem in problems if "ERR_INCOMPLETE_CHUNKED_ENCODING" not in problem] == []
