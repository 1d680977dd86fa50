"""Long-form jobs in a real server process (`python run.py`, the tiny random-weight model): SIGKILLed mid-job, the
restarted server resumes at the first unfinished sentence, makes no finished sentence again, and the result is
byte-identical to an uninterrupted run with the same seed. And a live request during a job steps on its own."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_server

pytestmark = pytest.mark.live

# ten paragraphs: ten sentences to plan (coqui packs short sentences of one paragraph together up to 250 characters)
TEXT = "\n\n".join(f"This is paragraph number {n} of a long story." for n in range(1, 7))
BODY = {"text": TEXT, "voice": "Dummy Alto", "format": "wav", "seed": 1234}
# Few tokens per sentence: random weights rarely stop, so each sentence runs to the cap. Three job rows in int8 (the
# CPU's default): a sentence's batch neighbours after the restart differ from the first run's, and its bytes must
# not (int8's products are exact, attention and prompts run per row, prompts are cut at the same places).
ENV = {"MAX_AUDIO_TOKENS": "12", "JOB_ROWS": "3", "GPT_PRECISION": "int8"}


def job(url: str, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    return answer


def completed(url: str, job_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (state := job(url, job_id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["status"] == "completed", state
    return state


def test_a_job_killed_midway_resumes_without_remaking_a_sentence_and_gives_the_same_bytes(tmp_path: Path) -> None:
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    server = start_server(tmp_path / "reference", **ENV)
    try:
        reference_id = httpx.post(f"{server.url}/v1/jobs", json=BODY, timeout=60).json()["id"]
        done = completed(server.url, reference_id)
        expected = httpx.get(f"{server.url}{done['audio_url']}", timeout=60).content
    finally:
        server.stop()

    server = start_server(tmp_path / "killed", **ENV)
    try:
        job_id = httpx.post(f"{server.url}/v1/jobs", json=BODY, timeout=60).json()["id"]
        deadline = time.monotonic() + 120
        while (done_before := job(server.url, job_id)["sentences_done"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.stop(signal.SIGKILL)
    pieces = tmp_path / "killed" / "data" / "jobs" / job_id / "pieces"
    with sqlite3.connect(tmp_path / "killed" / "data" / "jobs.sqlite3") as db:
        done = [row[0] for row in db.execute("SELECT idx FROM sentences WHERE done = 1 ORDER BY idx")]
    assert done_before <= len(done) < 6  # killed midway
    assert {f"{index:06d}.pcm" for index in done} <= {path.name for path in pieces.glob("*.pcm")}

    server = start_server(tmp_path / "killed", **ENV)
    try:
        resumed = completed(server.url, job_id)
        log = server.log()
        assert f"job {job_id}: resumed ({6 - len(done)} of 6 sentences left)" in log  # none made twice
        assert httpx.get(f"{server.url}{resumed['audio_url']}", timeout=60).content == expected
    finally:
        server.stop()
    assert not pieces.exists()  # they were removed once the result was assembled
