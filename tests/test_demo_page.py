"""The /demo page in headless Chromium (Debian's), driven by Playwright, against a real uvicorn."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def test_a_job_submitted_from_the_page_shows_its_progress_then_plays_and_its_title_stays_text(
    browser_page: tuple[object, list[str]], server: Server
) -> None:
    page, problems = browser_page
    dialogs: list[str] = []

    def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)  # type: ignore[attr-defined]
    title = "<img src=x onerror=alert(1)> & <b>bold</b>"
    page.fill("#job-text", "The first sentence of the job. A second one follows it. And a third ends it.")  # type: ignore[attr-defined]
    page.fill("#job-title", title)  # type: ignore[attr-defined]
    page.select_option("#job-format", "mp3")  # type: ignore[attr-defined]
    page.click("#job-submit")  # type: ignore[attr-defined]
    page.wait_for_function("window.jobsState.submitted.length === 1", timeout=30_000)  # type: ignore[attr-defined]
    row = f"#job-{page.evaluate('window.jobsState.submitted[0]')}"  # type: ignore[attr-defined]
    page.wait_for_selector(f"{row} progress", timeout=10_000)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        f"document.querySelector('{row}').dataset.status === 'completed'", timeout=120_000
    )
    with server.client() as http:
        job = http.get(f"/v1/jobs/{row.removeprefix('#job-')}").json()
    assert job["status"] == "completed" and job["audio_url"]
    assert page.get_attribute(f"{row} audio", "src") == job["audio_url"]  # type: ignore[attr-defined]
    assert page.get_attribute(f"{row} .job-download", "href") == job["audio_url"]  # type: ignore[attr-defined]
    assert page.evaluate(f"document.querySelector('{row} progress').value") == 1  # type: ignore[attr-defined]
    figures = page.text_content(f"{row} .job-figures")  # type: ignore[attr-defined]
    assert f"{job['sentences_total']}/{job['sentences_total']} sentences" in figures and "ETA —" in figures
    # the title is shown as the text it is: no element made of it, no script run
    assert page.text_content(f"{row} .job-title") == title  # type: ignore[attr-defined]
    assert page.locator("#jobs img, #jobs b").count() == 0  # type: ignore[attr-defined]
    # the browser reads the file it points at (Range requests): its length is the job's
    page.wait_for_function(f"document.querySelector('{row} audio').readyState >= 1", timeout=30_000)  # type: ignore[attr-defined]
    duration = page.evaluate(f"document.querySelector('{row} audio').duration")  # type: ignore[attr-defined]
    assert abs(duration - job["duration_s"]) < 0.2
    page.wait_for_function("window.jobsState.polling === false", timeout=5_000)  # type: ignore[attr-defined]
    page.click(f"{row} .job-delete")  # type: ignore[attr-defined]
    page.wait_for_selector(row, state="detached", timeout=10_000)  # type: ignore[attr-defined]
    assert dialogs == []
    assert [problem for problem in problems if "ERR_INCOMPLETE_CHUNKED_ENCODING" not in problem] == []
