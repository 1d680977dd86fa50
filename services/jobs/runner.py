"""Runs long-form jobs: each sentence a background stream of the engine, its audio on disk as it completes.

One runner per server process. It claims the oldest active job nobody drives (`JobStore.claim_next`: after a
restart, its own earlier jobs are free at once, its process being gone), and keeps up to `rows` of its
sentences being spoken at once, each by its speaker (`speaker.py`; on one server, a background request of the
engine: it gets only the rows and steps live speech leaves, and a live stream may take a row back, the sentence
then starting over with the same seed). When the oldest job has no sentence left to start, the next job's fill
the rows.

Each sentence has its own seed (the job's seed plus its index), so its audio does not depend on which
sentences it was batched with or on a restart; a finished sentence's audio is written atomically
(`files.JobFiles`) before the store marks it done, so after a SIGKILL the job resumes at its first unfinished
sentence and no finished sentence is made again. When every sentence is done the result is assembled from
the pieces (`assembly.assemble`), the pieces are removed, and the job completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from services.engine.pcm import pcm_seconds
from services.errors import ServiceError
from services.jobs.assembly import ChapterAudio, assemble, chapter_file_name
from services.jobs.files import JobFiles
from services.jobs.speaker import SentenceSpeaker
from services.jobs.store import JobRecord, JobStore, SentenceText, this_process

logger = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
SENTENCE_GAP_S = 0.0
"""Silence added between sentences in the result (XTTS ends each sentence with its own pause)."""


@dataclass
class JobRun:
    """A job this runner drives: its sentences not yet started, and how many are being spoken."""

    record: JobRecord
    files: JobFiles
    todo: deque[SentenceText]
    in_flight: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set to stop every sentence of the job within one engine step (cancel, failure, shutdown)."""
    failed: str | None = None
    started: float = field(default_factory=time.monotonic)
    chars_done_here: int = 0
    """Characters finished by this run (since it was claimed): the ETA's pace."""

    @property
    def finished_speaking(self) -> bool:
        return not self.todo and self.in_flight == 0


class JobRunner:
    """Drives jobs from the store through the engine; see the module's docstring."""

    def __init__(
        self,
        store: JobStore,
        speaker: SentenceSpeaker,
        data_dir: Path,
        rows: int,
        on_audio: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.speaker = speaker
        self.data_dir = data_dir
        self.rows = rows
        self.on_audio = on_audio or (lambda seconds: None)
        """Called with the seconds of each finished sentence (the metrics' job audio counter)."""
        self.claimant = this_process()
        self.runs: dict[str, JobRun] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sentences: set[asyncio.Task[None]] = set()
        self._assembling: set[asyncio.Task[None]] = set()
        self._last_heartbeat = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="job runner")

    async def stop(self) -> None:
        """Stop making audio and give up the claims: unfinished jobs resume at the next start (or on another server)."""
        for run in self.runs.values():
            run.cancel.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in [*self._sentences, *self._assembling]:
            task.cancel()
        await asyncio.gather(*self._sentences, *self._assembling, return_exceptions=True)
        await anyio.to_thread.run_sync(self.store.release, self.claimant)

    def wake(self) -> None:
        """A job was queued or cancelled: look now rather than at the next heartbeat."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job's sentences within one engine step (the store already says cancelled)."""
        if (run := self.runs.pop(job_id, None)) is not None:
            run.cancel.set()
        self.wake()

    def pace(self, job_id: str) -> float | None:
        """Characters per second this runner makes of the job (None before its first sentence)."""
        run = self.runs.get(job_id)
        if run is None or run.chars_done_here == 0:
            return None
        return run.chars_done_here / max(time.monotonic() - run.started, 1e-3)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # before looking: a wake while we look (a sentence done) means look again at once
            try:
                await self._fill()
                await self._heartbeat()
            except Exception:  # a bug here must not stop every job for good: log it and look again
                logger.exception("the job runner failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=HEARTBEAT_S)

    async def _fill(self) -> None:
        """Start sentences until `rows` are in the engine, claiming jobs as needed; finish jobs that are done."""
        for run in list(self.runs.values()):
            if run.finished_speaking and run.failed is None and not run.cancel.is_set():
                self._start(self._assembling, self._finish(run))
        while len(self._sentences) < self.rows:
            next_run = next((run for run in self.runs.values() if run.todo and not run.cancel.is_set()), None)
            if next_run is None:
                claimed = await anyio.to_thread.run_sync(self.store.claim_next, self.claimant, set(self.runs))
                if claimed is None:
                    return
                await self._open(claimed)
                continue
            sentence = next_run.todo.popleft()
            next_run.in_flight += 1
            self._start(self._sentences, self._speak(next_run, sentence))

    def _start(self, tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            self.wake()

        task.add_done_callback(done)

    async def _open(self, record: JobRecord) -> None:
        todo = deque(await anyio.to_thread.run_sync(self.store.unfinished_sentences, record.id))
        self.runs[record.id] = JobRun(record, JobFiles(self.data_dir, record.id), todo)
        logger.info("job %s: %s (%d of %d sentences left)", record.id,
                    "started" if len(todo) == record.sentences_total else "resumed", len(todo),
                    record.sentences_total)  # fmt: skip

    async def _speak(self, run: JobRun, sentence: SentenceText) -> None:
        try:
            pcm = await self.speaker.speak(run.record.request, sentence, run.cancel)
            if pcm is None:
                return
            await anyio.to_thread.run_sync(run.files.write_piece, sentence.index, pcm)
            if await anyio.to_thread.run_sync(self.store.sentence_done, run.record.id, sentence.index, len(pcm) // 2):
                run.chars_done_here += len(sentence.text)
                self.on_audio(pcm_seconds(len(pcm)))
        except OSError as error:
            await self._fail(run, _disk_message(error))
        except ServiceError as error:
            await self._fail(run, f"sentence {sentence.index + 1}: {error.message}")
        except Exception as error:
            logger.exception("job %s: sentence %d failed", run.record.id, sentence.index)
            await self._fail(run, f"sentence {sentence.index + 1}: {type(error).__name__}: {error}")
        finally:
            run.in_flight -= 1

    async def _finish(self, run: JobRun) -> None:
        record = run.record
        run.cancel.set()  # nothing more to start for it; and `_fill` must not assemble it twice
        try:
            result = await anyio.to_thread.run_sync(self._assemble, record, run.files)
        except OSError as error:
            await self._fail(run, _disk_message(error))
            return
        except Exception as error:
            logger.exception("job %s: assembling its audio failed", record.id)
            await self._fail(run, f"assembling the audio failed: {type(error).__name__}: {error}")
            return
        self.runs.pop(record.id, None)
        if await anyio.to_thread.run_sync(lambda: self.store.finish(record.id, "completed", result=result)):
            await anyio.to_thread.run_sync(run.files.remove_pieces)
            logger.info("job %s: completed, %.1f s of audio in %s", record.id, result["duration_s"], result["file"])
        else:  # cancelled while it was being assembled
            await anyio.to_thread.run_sync(run.files.remove)

    def _assemble(self, record: JobRecord, files: JobFiles) -> dict[str, Any]:
        """Blocking: the result file (and one per chapter for formats without chapter marks), from the pieces."""
        output_format = record.request["format"]
        order = self.store.finished_sentences(record.id)
        chapters = [
            ChapterAudio(title, [files.piece(index) for index, chapter in order if chapter == number])
            for number, title in enumerate(record.chapters)
        ]
        chapters = [chapter for chapter in chapters if chapter.pieces]
        title = record.request.get("title") or ""
        name = f"{record.id}.{output_format}"
        files.result.mkdir(parents=True, exist_ok=True)
        marks = assemble(chapters, output_format, files.result_file(name), title=title, gap_s=SENTENCE_GAP_S)
        chapter_files: list[str | None] = [None] * len(chapters)
        if output_format != "m4b" and len(chapters) > 1:
            for number, chapter in enumerate(chapters):
                chapter_name = chapter_file_name(number + 1, chapter.title, output_format)
                assemble(
                    [chapter], output_format, files.result_file(chapter_name), title=chapter.title, gap_s=SENTENCE_GAP_S
                )
                chapter_files[number] = chapter_name
        return {
            "file": name,
            "bytes": files.result_file(name).stat().st_size,
            "duration_s": marks[-1].end_s if marks else 0.0,
            "chapters": [
                {"title": mark.title, "start_s": mark.start_s, "end_s": mark.end_s, "file": chapter_file}
                for mark, chapter_file in zip(marks, chapter_files, strict=True)
            ],
        }

    async def _fail(self, run: JobRun, message: str) -> None:
        if run.failed is not None:
            return
        run.failed = message
        run.cancel.set()
        self.runs.pop(run.record.id, None)
        await self._end_failed(run.record.id, run.files, message)

    async def _end_failed(self, job_id: str, files: JobFiles, message: str) -> None:
        logger.warning("job %s: failed: %s", job_id, message)
        if await anyio.to_thread.run_sync(lambda: self.store.finish(job_id, "failed", error=message)):
            await anyio.to_thread.run_sync(files.remove)  # nothing half-made is ever served

    async def _heartbeat(self) -> None:
        """Renew this runner's claims; stop the jobs another server cancelled or deleted meanwhile."""
        if time.monotonic() - self._last_heartbeat < HEARTBEAT_S / 2:
            return
        self._last_heartbeat = time.monotonic()
        ids = list(self.runs)
        await anyio.to_thread.run_sync(self.store.renew, self.claimant, ids)
        for job_id in ids:
            record = await anyio.to_thread.run_sync(self.store.get, job_id)
            if (record is None or not record.active) and job_id in self.runs:
                self.cancel(job_id)


def _disk_message(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "the server's disk is full (DATA_DIR): no audio was kept; free space and submit the job again"
    return f"could not write the job's audio: {error.strerror or error}"
