"""Long-form jobs for the routes: every check before a job is queued, then its progress, result and removal.

A job is a `Document` (chapters of text, from `documents.py`) spoken in one voice. `submit` refuses what cannot be
served (language, voice, size, the caller's active jobs) and plans every sentence before anything is queued, so a
bad input is a 4xx and never a failed job; the runner (`runner.py`) then makes the audio.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from services.engine.pcm import OUTPUT_SAMPLE_RATE
from services.engine.protocol import Engine
from services.errors import JobNotFinished, JobNotFound, TooManyJobs
from services.jobs.documents import Document, check_chars
from services.jobs.files import JobFiles
from services.jobs.runner import JobRunner
from services.jobs.store import JobRecord, JobStore, SentenceText
from services.speech import SpeechOptions, SpeechService


@dataclass(frozen=True)
class JobLimits:
    max_chars: int
    max_active: int
    """Jobs one owner may have queued or running."""


@dataclass(frozen=True)
class JobProgress:
    """A job as a client sees it: the record plus what follows from it."""

    record: JobRecord
    progress: float
    audio_seconds: float
    eta_s: float | None


class JobService:
    """Submits, reports, serves and removes jobs; owners see only their own (an admin, everyone's)."""

    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        speech: SpeechService,
        engine: Engine,
        data_dir: Path,
        limits: JobLimits,
    ) -> None:
        self.store = store
        self.runner = runner
        self.speech = speech
        self.engine = engine
        self.data_dir = data_dir
        self.limits = limits

    async def close(self) -> None:
        """Stop the runner (unfinished jobs resume at the next start) and close the store."""
        await self.runner.stop()
        await anyio.to_thread.run_sync(self.store.close)

    async def submit(
        self,
        document: Document,
        voice: str,
        language: str,
        options: SpeechOptions,
        output_format: str,
        owner: str | None,
    ) -> JobRecord:
        """Check and plan the job, then queue it; raises a ServiceError (queueing nothing) if it cannot be served."""
        check_chars(document, self.limits.max_chars)
        await self.speech.check_voice(language, voice)
        active = await anyio.to_thread.run_sync(self.store.count_active, owner)
        if active >= self.limits.max_active:
            raise TooManyJobs(
                f"{active} of your jobs are queued or running; MAX_ACTIVE_JOBS is {self.limits.max_active}",
                retry_after_s=60,
                max_active_jobs=self.limits.max_active,
            )
        sentences = await self._plan(document, language, options.enable_text_splitting)
        seed = options.seed if options.seed is not None else secrets.randbits(62)
        request = {
            "voice": voice,
            "language": language,
            "format": output_format,
            "title": document.title,
            "preview": " ".join(document.chapters[0].text[:120].split())[:80].rstrip(),
            "seed": seed,
            "options": {**asdict(options), "seed": seed},
        }
        job_id = secrets.token_hex(8)
        chapters = [chapter.title for chapter in document.chapters]
        record = await anyio.to_thread.run_sync(self.store.create, job_id, owner, request, chapters, sentences)
        self.runner.wake()
        return record

    async def _plan(self, document: Document, language: str, split: bool) -> list[SentenceText]:
        """Every sentence, planned as the engine will speak it (a paragraph at a time: books are long)."""
        sentences: list[SentenceText] = []
        for number, chapter in enumerate(document.chapters):
            for paragraph in chapter.text.split("\n\n"):
                if not paragraph.strip():
                    continue
                for sentence in await self.engine.plan(paragraph, language, split):
                    sentences.append(SentenceText(len(sentences), number, sentence.text))
        return sentences

    async def get(self, job_id: str, owner: str | None, admin: bool) -> JobProgress:
        record = await anyio.to_thread.run_sync(self.store.get, job_id)
        if record is None or not (admin or record.owner == owner):
            raise JobNotFound(f"no job {job_id!r}", job_id=job_id)
        return self.progress(record)

    async def jobs(self, owner: str | None, admin: bool) -> list[JobProgress]:
        records = await anyio.to_thread.run_sync(lambda: self.store.jobs(owner, everyone=admin))
        return [self.progress(record) for record in records]

    def progress(self, record: JobRecord) -> JobProgress:
        done = record.chars_done / record.chars_total if record.chars_total else 1.0
        if record.status == "completed":
            done = 1.0
        eta: float | None = None
        pace = self.runner.pace(record.id)
        if record.status == "running" and pace:
            eta = (record.chars_total - record.chars_done) / pace
        return JobProgress(record, round(done, 4), record.audio_samples / OUTPUT_SAMPLE_RATE, eta)

    async def delete(self, job_id: str, owner: str | None, admin: bool) -> JobProgress:
        """Cancel an active job (its record stays, `cancelled`) or remove an ended one; its files go either way."""
        job = await self.get(job_id, owner, admin)
        record = job.record
        if record.active:
            await anyio.to_thread.run_sync(
                lambda: self.store.finish(job_id, "cancelled", error="cancelled by the client")
            )
            self.runner.cancel(job_id)
        else:
            await anyio.to_thread.run_sync(self.store.delete, job_id)
        await anyio.to_thread.run_sync(JobFiles(self.data_dir, job_id).remove)
        updated = await anyio.to_thread.run_sync(self.store.get, job_id)
        return self.progress(updated) if updated is not None else job

    async def audio(self, job_id: str, owner: str | None, admin: bool, chapter: int | None) -> Path:
        """The result file (or one chapter's); 409 before the job completed."""
        record = (await self.get(job_id, owner, admin)).record
        if record.status != "completed" or record.result is None:
            raise JobNotFinished(
                f"job {job_id!r} is {record.status}; its audio is ready once it is completed", status=record.status
            )
        name: Any = record.result["file"]
        if chapter is not None:
            chapters = record.result["chapters"]
            if not 1 <= chapter <= len(chapters) or chapters[chapter - 1]["file"] is None:
                raise JobNotFound(
                    f"job {job_id!r} has no chapter file {chapter} (chapters have their own files only in formats "
                    "without chapter marks, for input with more than one chapter)",
                    chapters=len(chapters),
                )
            name = chapters[chapter - 1]["file"]
        path = JobFiles(self.data_dir, job_id).result_file(name)
        if not path.exists():
            raise JobNotFound(f"job {job_id!r}'s audio is gone", job_id=job_id)
        return path
