"""Long-form jobs' durable state: one SQLite database (WAL) under DATA_DIR, shared by every server on it.

Two tables: `jobs` (what was asked, its state, its counters) and `sentences` (each sentence's text, chapter and
whether its audio is on disk). A sentence is marked done only after its audio file is durably written
(`services/jobs/runner.py`), so after a crash the first unfinished sentences are the only ones made again.

Several processes may share the database (replicas under `make cluster`, a restarted server): a job is driven by
one runner at a time, the one holding its claim (`claimant` = `<pid>@<host>`, renewed by `heartbeat`). A claim is
free once its process is gone (same host) or its heartbeat is older than `CLAIM_TIMEOUT_S` (another host), the rule
`shared_folder.is_leftover` applies to temporary files. Blocking: call it from a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from services.shared_folder import TEMP_PREFIX, is_leftover, temp_prefix

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
ACTIVE: tuple[JobStatus, ...] = ("queued", "running")
CLAIM_TIMEOUT_S = 30.0
"""A claim not renewed for this long belongs to a server that stopped (runners renew it every few seconds)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    sentences_total INTEGER NOT NULL,
    sentences_done INTEGER NOT NULL DEFAULT 0,
    chars_total INTEGER NOT NULL,
    chars_done INTEGER NOT NULL DEFAULT 0,
    audio_samples INTEGER NOT NULL DEFAULT 0,
    chapters TEXT NOT NULL,
    result TEXT,
    claimant TEXT,
    heartbeat REAL
);
CREATE TABLE IF NOT EXISTS sentences (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    chapter INTEGER NOT NULL,
    text TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    samples INTEGER,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs(owner, created);
"""


@dataclass(frozen=True)
class SentenceText:
    """One sentence of a job, as planned when the job was made."""

    index: int
    chapter: int
    text: str


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: what was asked (`request`, JSON-able), where it is, and its counters."""

    id: str
    owner: str | None
    status: JobStatus
    request: dict[str, Any]
    created: float
    started: float | None
    finished: float | None
    error: str | None
    sentences_total: int
    sentences_done: int
    chars_total: int
    chars_done: int
    audio_samples: int
    chapters: list[str]
    """Chapter titles, in order ("" for an untitled chapter)."""
    result: dict[str, Any] | None
    """Once completed: the result files and chapter marks (`runner.py` writes it)."""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def this_process() -> str:
    """The claimant name of this process: `<pid>@<host>`, as temporary files name their writer."""
    return temp_prefix().removeprefix(TEMP_PREFIX).removesuffix("~")


def claim_is_free(claimant: str | None, heartbeat: float | None, now: float) -> bool:
    """Whether nobody drives the job: never claimed, its process gone (same host), or its heartbeat stale."""
    if claimant is None or heartbeat is None:
        return True
    return is_leftover(f"{TEMP_PREFIX}{claimant}~", now - heartbeat, CLAIM_TIMEOUT_S)


class JobStore:
    """The jobs database. Thread-safe (one connection, one lock); blocking."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a sentence marked done survives a power cut, as its file does
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def create(
        self,
        job_id: str,
        owner: str | None,
        request: dict[str, Any],
        chapters: list[str],
        sentences: list[SentenceText],
    ) -> JobRecord:
        """A new queued job with its sentences."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, owner, status, request, created, sentences_total, chars_total, chapters)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                (
                    job_id,
                    owner,
                    json.dumps(request),
                    time.time(),
                    len(sentences),
                    sum(len(sentence.text) for sentence in sentences),
                    json.dumps(chapters),
                ),
            )
            db.executemany(
                "INSERT INTO sentences (job_id, idx, chapter, text) VALUES (?, ?, ?, ?)",
                [(job_id, sentence.index, sentence.chapter, sentence.text) for sentence in sentences],
            )
        record = self.get(job_id)
        assert record is not None
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row is not None else None

    def jobs(self, owner: str | None = None, everyone: bool = False) -> list[JobRecord]:
        """Jobs, oldest first: `owner`'s, or everyone's."""
        query = "SELECT * FROM jobs"
        args: tuple[str | None, ...] = ()
        if not everyone:
            query, args = "SELECT * FROM jobs WHERE owner IS ?", (owner,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created, id", args).fetchall()
        return [_record(row) for row in rows]

    def count_active(self, owner: str | None) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE owner IS ? AND status IN ('queued', 'running')", (owner,)
            ).fetchone()
        return int(row[0])

    def count_by_status(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def claim_next(self, claimant: str, exclude: set[str]) -> JobRecord | None:
        """Claim the oldest active job nobody drives (not in `exclude`); it becomes `running`."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, claimant, heartbeat FROM jobs WHERE status IN ('queued', 'running') ORDER BY created, id"
            ).fetchall()
            for row in rows:
                if row["id"] in exclude or not claim_is_free(row["claimant"], row["heartbeat"], now):
                    continue
                db.execute(
                    "UPDATE jobs SET claimant = ?, heartbeat = ?, status = 'running', started = COALESCE(started, ?)"
                    " WHERE id = ?",
                    (claimant, now, now, row["id"]),
                )
                job_id = str(row["id"])
                break
            else:
                return None
        return self.get(job_id)

    def renew(self, claimant: str, job_ids: list[str]) -> None:
        """Renew this runner's claims (call every few seconds)."""
        if not job_ids:
            return
        with self._transaction() as db:
            db.executemany(
                "UPDATE jobs SET heartbeat = ? WHERE id = ? AND claimant = ?",
                [(time.time(), job_id, claimant) for job_id in job_ids],
            )

    def release(self, claimant: str) -> None:
        """Give up this runner's claims (a clean stop): another runner, or the next start, takes them at once."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET claimant = NULL, heartbeat = NULL WHERE claimant = ?", (claimant,))

    def unfinished_sentences(self, job_id: str) -> list[SentenceText]:
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, chapter, text FROM sentences WHERE job_id = ? AND done = 0 ORDER BY idx", (job_id,)
            ).fetchall()
        return [SentenceText(int(row[0]), int(row[1]), str(row[2])) for row in rows]

    def finished_sentences(self, job_id: str) -> list[tuple[int, int]]:
        """(index, chapter) of every sentence of the job, in order, once all are done; checks none is missing."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, chapter, done FROM sentences WHERE job_id = ? ORDER BY idx", (job_id,)
            ).fetchall()
        if any(not row[2] for row in rows):
            raise RuntimeError("the job has unfinished sentences")
        return [(int(row[0]), int(row[1])) for row in rows]

    def sentence_done(self, job_id: str, index: int, samples: int) -> bool:
        """Record a sentence whose audio is on disk; False if the job is no longer active (cancelled, deleted)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT s.done, s.text, j.status FROM sentences s JOIN jobs j ON j.id = s.job_id"
                " WHERE s.job_id = ? AND s.idx = ?",
                (job_id, index),
            ).fetchone()
            if row is None or row["status"] not in ACTIVE:
                return False
            if row["done"]:  # made twice (a claim moved while it was being made): count it once
                return True
            db.execute(
                "UPDATE sentences SET done = 1, samples = ? WHERE job_id = ? AND idx = ?", (samples, job_id, index)
            )
            db.execute(
                "UPDATE jobs SET sentences_done = sentences_done + 1, chars_done = chars_done + ?,"
                " audio_samples = audio_samples + ? WHERE id = ?",
                (len(row["text"]), samples, job_id),
            )
        return True

    def finish(
        self, job_id: str, status: JobStatus, error: str | None = None, result: dict[str, Any] | None = None
    ) -> bool:
        """End an active job (completed, failed or cancelled); False if it had ended already."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, error = ?, result = ?, finished = ?, claimant = NULL"
                " WHERE id = ? AND status IN ('queued', 'running')",
                (status, error, json.dumps(result) if result is not None else None, time.time(), job_id),
            )
        return cursor.rowcount > 0

    def delete(self, job_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        owner=row["owner"],
        status=row["status"],
        request=json.loads(row["request"]),
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        error=row["error"],
        sentences_total=row["sentences_total"],
        sentences_done=row["sentences_done"],
        chars_total=row["chars_total"],
        chars_done=row["chars_done"],
        audio_samples=row["audio_samples"],
        chapters=json.loads(row["chapters"]),
        result=json.loads(row["result"]) if row["result"] is not None else None,
    )
