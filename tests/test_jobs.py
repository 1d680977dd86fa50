"""Long-form jobs through the app, in-process with the fake engine: submit, progress, result (Range), chapters,
cancel, limits and bad input (4xx before queueing), a full disk, and a restart that resumes with the same bytes."""

from __future__ import annotations

import errno
import io
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from fastapi.testclient import TestClient

from services.jobs.files import JobFiles
from tests.conftest import app_client, app_settings, wait_for
from tests.fakes import FakeEngine

pytestmark = pytest.mark.app

CHUNK_SECONDS = 0.1
CHUNKS_PER_SENTENCE = 3
SENTENCE_SECONDS = CHUNK_SECONDS * CHUNKS_PER_SENTENCE
TEXT = " ".join(f"Sentence number {n} of the book." for n in range(1, 13))  # 12 sentences for the fake engine


def jobs_app(tmp_path: Path, engine: FakeEngine | None = None, **settings: Any) -> Iterator[TestClient]:
    engine = engine or FakeEngine(chunks_per_sentence=CHUNKS_PER_SENTENCE, chunk_seconds=CHUNK_SECONDS)
    return app_client(engine, app_settings(tmp_path, **settings))


def finished(client: TestClient, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getframerate() == 24_000 and reader.getnchannels() == 1
        return reader.getnframes() / reader.getframerate()


def test_a_job_is_queued_at_once_reports_rising_progress_and_ends_with_the_whole_text_as_audio(tmp_path: Path) -> None:
    engine = FakeEngine(chunks_per_sentence=CHUNKS_PER_SENTENCE, chunk_seconds=CHUNK_SECONDS, chunk_delay_s=0.01)
    with jobs_app(tmp_path, engine) as client:
        response = client.post("/v1/jobs", json={"text": TEXT, "voice": "Dummy Alto", "format": "wav", "seed": 7})
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["status"] in ("queued", "running") and job["sentences_total"] == 12 and job["seed"] == 7
        assert job["preview"] == "Sentence number 1 of the book. Sentence number 2 of the book. Sentence number 3"
        seen = []
        deadline = time.monotonic() + 30
        while (job := client.get(f"/v1/jobs/{job['id']}").json())["status"] != "completed":
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            seen.append(job["progress"])
            time.sleep(0.01)
        assert any(0 < progress < 1 for progress in seen) and seen == sorted(seen)  # it rose, and never fell
        assert job["progress"] == 1 and job["sentences_done"] == 12
        assert job["audio_seconds"] == pytest.approx(12 * SENTENCE_SECONDS)
        audio = client.get(job["audio_url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        assert wav_seconds(audio.content) == pytest.approx(12 * SENTENCE_SECONDS, abs=0.01)
        assert job["duration_s"] == pytest.approx(12 * SENTENCE_SECONDS, abs=0.01)
        assert max(len(batch) for batch in engine.batches) > 1  # its sentences decoded together, in several rows
        part = client.get(job["audio_url"], headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == audio.content[100:200]
        listed = client.get("/v1/jobs").json()
        assert [entry["id"] for entry in listed] == [job["id"]]
        assert 'xtts_jobs{state="completed"} 1.0' in client.get("/metrics").text


def test_equal_seeds_give_equal_audio_and_sentences_have_seeds_of_their_own(tmp_path: Path) -> None:
    with jobs_app(tmp_path) as client:
        results = []
        for seed in (3, 3, 4):
            job = client.post("/v1/jobs", json={"text": TEXT, "voice": "Dummy Alto", "format": "wav", "seed": seed})
            results.append(client.get(finished(client, job.json()["id"])["audio_url"]).content)
        assert results[0] == results[1] and results[0] != results[2]
        pcm = results[0][44:]
        sentence_bytes = int(SENTENCE_SECONDS * 24_000) * 2
        assert pcm[:sentence_bytes] != pcm[sentence_bytes : 2 * sentence_bytes]  # not one seed for every sentence


def test_a_markdown_book_with_chapters_gives_chapter_marks_in_m4b_and_chapter_files_in_mp3(tmp_path: Path) -> None:
    book = "# Chapter One\n\nIt begins. Then more.\n\n# Chapter Two\n\nIt ends here.\n"
    with jobs_app(tmp_path) as client:
        files = {"file": ("book.md", book.encode(), "text/markdown")}
        job = client.post("/v1/jobs", data={"voice": "Dummy Bass", "format": "m4b", "title": "A Book"}, files=files)
        assert job.status_code == 202, job.text
        done = finished(client, job.json()["id"])
        assert done["status"] == "completed", done
        assert [chapter["title"] for chapter in done["chapters"]] == ["Chapter One", "Chapter Two"]
        first, second = done["chapters"]
        assert first["start_s"] == 0 and first["end_s"] == pytest.approx(second["start_s"])
        audio = client.get(done["audio_url"])
        with av.open(io.BytesIO(audio.content)) as container:
            assert [chapter["metadata"].get("title") for chapter in container.chapters()] == [
                "Chapter One",
                "Chapter Two",
            ]
        mp3 = finished(
            client, client.post("/v1/jobs", data={"voice": "Dummy Bass", "format": "mp3"}, files=files).json()["id"]
        )
        urls = [chapter["audio_url"] for chapter in mp3["chapters"]]
        assert all(urls)
        assert client.get(urls[1]).content[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
        assert client.get(f"/v1/jobs/{mp3['id']}/audio?chapter=3").status_code == 404


def test_bad_input_is_refused_before_anything_is_queued(tmp_path: Path) -> None:
    with jobs_app(tmp_path, MAX_JOB_CHARS=200) as client:
        cases = [
            ({"json": {"text": "   ", "voice": "Dummy Alto"}}, 400),
            ({"json": {"voice": "Dummy Alto"}}, 400),
            ({"json": {"text": "Hello.", "voice": "nobody-here"}}, 404),
            ({"json": {"text": "Hello.", "voice": "Dummy Alto", "language": "xx"}}, 422),
            ({"json": {"text": "Hello.", "voice": "Dummy Alto", "format": "ogg"}}, 422),
            ({"json": {"text": "x. " * 100, "voice": "Dummy Alto"}}, 413),
            ({"content": b"text=hi", "headers": {"content-type": "text/plain"}}, 415),
            ({"data": {"voice": "Dummy Alto"}, "files": {"file": ("book.pdf", b"%PDF", "application/pdf")}}, 415),
            (
                {
                    "data": {"voice": "Dummy Alto", "temperature": "hot"},
                    "files": {"file": ("a.txt", b"Hi.", "text/plain")},
                },
                422,
            ),
        ]
        for request, status in cases:
            response = client.post("/v1/jobs", **request)
            assert response.status_code == status, (request, response.text)
            assert response.json()["error"]
        assert client.get("/v1/jobs").json() == []
        assert client.get("/v1/jobs/nope").status_code == 404


def test_a_caller_has_at_most_max_active_jobs_and_sees_only_their_own(tmp_path: Path) -> None:
    engine = FakeEngine(chunks_per_sentence=50, chunk_delay_s=0.01)
    with jobs_app(tmp_path, engine, MAX_ACTIVE_JOBS=1, API_KEYS="key-a,key-b") as client:
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        first = client.post("/v1/jobs", json={"text": TEXT, "voice": "Dummy Alto"}, headers=a)
        assert first.status_code == 202
        second = client.post("/v1/jobs", json={"text": TEXT, "voice": "Dummy Alto"}, headers=a)
        assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_jobs"  # /v1: OpenAI's shape
        assert client.post("/v1/jobs", json={"text": "Hi.", "voice": "Dummy Alto"}, headers=b).status_code == 202
        job_id = first.json()["id"]
        assert client.get(f"/v1/jobs/{job_id}", headers=b).status_code == 404
        assert client.delete(f"/v1/jobs/{job_id}", headers=b).status_code == 404
        assert [job["id"] for job in client.get("/v1/jobs", headers=a).json()] == [job_id]
        assert client.get(f"/v1/jobs/{job_id}/audio", headers=a).status_code == 409


def test_cancelling_a_running_job_frees_its_rows_within_a_step_and_deletes_its_audio(tmp_path: Path) -> None:
    engine = FakeEngine(chunks_per_sentence=200, chunk_delay_s=0.005)
    with jobs_app(tmp_path, engine) as client:
        job_id = client.post("/v1/jobs", json={"text": TEXT, "voice": "Dummy Alto"}).json()["id"]
        wait_for(lambda: engine.scheduler.running > 0, what="the job's sentences in the batch")
        cancelled = client.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        steps = len(engine.batches)
        wait_for(lambda: engine.scheduler.running == 0, timeout_s=5, what="rows freed")
        assert len(engine.batches) - steps <= 2  # the step in progress, at most one more
        assert not JobFiles(tmp_path / "data", job_id).root.exists()
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200  # an ended job: its record goes too
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404


def test_a_full_disk_fails_the_job_clearly_and_serves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = []

    def write_piece(self: JobFiles, index: int, pcm: bytes) -> None:
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(index)
        original(self, index, pcm)

    original = JobFiles.write_piece
    monkeypatch.setattr(JobFiles, "write_piece", write_piece)
    with jobs_app(tmp_path) as client:
        job_id = client.post("/v1/jobs", json={"text": TEXT, "voice": "Dummy Alto"}).json()["id"]
        job = finished(client, job_id)
        assert job["status"] == "failed" and "disk is full" in job["error"]
        assert client.get(f"/v1/jobs/{job_id}/audio").status_code == 409
        assert not JobFiles(tmp_path / "data", job_id).root.exists()
        assert client.get("/health").status_code == 200


def test_a_job_stopped_midway_resumes_at_the_next_start_without_remaking_a_sentence_and_gives_the_same_bytes(
    tmp_path: Path,
) -> None:
    body = {"text": TEXT, "voice": "Dummy Tenor", "format": "flac", "seed": 11}
    with jobs_app(tmp_path / "once") as client:
        expected = client.get(finished(client, client.post("/v1/jobs", json=body).json()["id"])["audio_url"]).content
    engine = FakeEngine(chunks_per_sentence=CHUNKS_PER_SENTENCE, chunk_seconds=CHUNK_SECONDS, chunk_delay_s=0.02)
    with jobs_app(tmp_path / "twice", engine, JOB_ROWS=2) as client:
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["sentences_done"] >= 4, what="4 sentences")
    done_before = len([path for path in (tmp_path / "twice" / "data" / "jobs" / job_id / "pieces").glob("*.pcm")])
    assert 4 <= done_before < 12
    engine = FakeEngine(chunks_per_sentence=CHUNKS_PER_SENTENCE, chunk_seconds=CHUNK_SECONDS)
    with jobs_app(tmp_path / "twice", engine) as client:
        job = finished(client, job_id)
        assert job["status"] == "completed"
        assert client.get(job["audio_url"]).content == expected
    sentences_made = sum(len(batch) for batch in engine.batches) // CHUNKS_PER_SENTENCE
    assert sentences_made == 12 - done_before  # after the restart, only the unfinished ones
