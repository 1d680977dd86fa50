"""What lets several replicas act as one server, without Ray: the exchange between replicas, sessions found
and cancelled on another replica, metrics merged with replica labels, and the shared voice folder's
temporary files. (tests/test_cluster.py runs the real thing on a local Ray.)"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.exchange import Exchange
from services.client_settings import ClientSettingsFile
from services.errors import SessionConflict, SessionNotFound
from services.metrics import LiveFigures, Metrics
from services.peers import LocalAnswers, Question, SessionDirectory
from services.sessions import SessionRegistry, StreamSession, StreamState
from services.voice_store import VoiceStore


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


class Live:
    def __init__(self, session_id: str, owner: str | None = None) -> None:
        self.session = StreamSession(id=session_id, voice="v", language="en", characters=3, owner=owner)
        self.reasons: list[str] = []

    def cancel(self, reason: str) -> None:
        self.reasons.append(reason)


class Replica:
    """A replica's registry and metrics, linked to the others through one in-process exchange."""

    def __init__(self, name: str, exchange: Exchange) -> None:
        self.replica: str | None = name
        self.exchange = exchange
        self.sessions = SessionRegistry(10, 60, replica=name)
        self.metrics = Metrics(LiveFigures(lambda: 1, lambda: 0, lambda: 4, lambda: None), replica=name)
        self.directory = SessionDirectory(self.sessions, self)
        self.answers = LocalAnswers(self.sessions, self.metrics.render)
        self.serving: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        """What cluster.peers.RayPeers does through Ray: poll the mailbox, answer."""
        while True:
            for question_id, question, args in await self.exchange.poll(str(self.replica), 0.5):
                self.exchange.answer(question_id, self.answers.answer(question, args))  # type: ignore[arg-type]

    async def ask(self, question: Question, args: tuple[object, ...]) -> list[object]:
        return await self.exchange.ask(str(self.replica), question, args, 2.0, first_found=question != "metrics")

    def start(self) -> None:
        self.serving = asyncio.ensure_future(self.serve())


async def two_replicas(exchange: Exchange) -> tuple[Replica, Replica]:
    one, two = Replica("one", exchange), Replica("two", exchange)
    one.start()
    two.start()
    for _ in range(100):  # until both have polled once
        if len(exchange.replicas()) == 2:
            break
        await asyncio.sleep(0.01)
    return one, two


def test_status_and_cancel_reach_the_replica_that_holds_the_session() -> None:
    async def main() -> None:
        one, two = await two_replicas(Exchange())
        live = Live("s1")
        one.sessions.register(live)
        found = await two.directory.get("s1", None, True)
        assert (found.id, found.replica, found.state) == ("s1", "one", StreamState.QUEUED)
        asked_at = time.perf_counter()
        cancelled = await two.directory.cancel("s1", "cancelled by request", None, True)
        assert live.reasons == ["cancelled by request"] and cancelled.replica == "one"
        assert time.perf_counter() - asked_at < 0.2  # delivered at once, not at the next poll
        one.sessions.finish(live.session, StreamState.CANCELLED, "cancelled by request")
        assert (await two.directory.get("s1", None, True)).state == StreamState.CANCELLED
        with pytest.raises(SessionConflict, match="already finished"):
            await two.directory.cancel("s1", "again", None, True)
        with pytest.raises(SessionNotFound):
            await two.directory.get("nowhere", None, True)
        with pytest.raises(SessionNotFound):
            await two.directory.cancel("nowhere", "x", None, True)

    run(main)


def test_a_client_chosen_id_taken_on_another_replica_is_a_conflict() -> None:
    async def main() -> None:
        one, two = await two_replicas(Exchange())
        one.sessions.register(Live("chosen", owner="key-a"))
        with pytest.raises(SessionConflict, match="already in use"):
            await two.directory.ensure_unused_elsewhere("chosen", "key-a")
        await two.directory.ensure_unused_elsewhere("chosen", "key-b")  # ids are per key
        await two.directory.ensure_unused_elsewhere("fresh", "key-a")

    run(main)


def test_another_keys_session_stays_unknown_on_every_replica() -> None:
    async def main() -> None:
        one, two = await two_replicas(Exchange())
        live = Live("mine", owner="key-a")
        one.sessions.register(live)
        with pytest.raises(SessionNotFound):
            await two.directory.get("mine", "key-b", False)
        with pytest.raises(SessionNotFound):
            await two.directory.cancel("mine", "x", "key-b", False)
        assert live.reasons == []
        assert (await two.directory.get("mine", "key-a", False)).owner == "key-a"
        assert (await two.directory.get("mine", "admin-key", True)).owner == "key-a"  # an admin sees all

    run(main)


def test_a_replica_that_stops_polling_is_no_longer_asked() -> None:
    async def main() -> None:
        exchange = Exchange(liveness_s=0.3)
        one, two = await two_replicas(exchange)
        assert two.serving is not None
        two.serving.cancel()  # killed: it never answers again
        one.sessions.register(Live("x"))
        started = time.perf_counter()
        assert await exchange.ask("one", "session", ("y", None, True), timeout_s=0.5) == []  # bounded wait
        assert 0.4 < time.perf_counter() - started < 1.0
        await asyncio.sleep(0.6)
        assert exchange.replicas() == ["one"]
        started = time.perf_counter()
        assert await exchange.ask("one", "session", ("y", None, True), timeout_s=5) == []
        assert time.perf_counter() - started < 0.1  # nobody left to wait for
        exchange.leave("one")
        assert exchange.replicas() == []

    run(main)


def test_one_scrape_shows_every_replicas_series_labelled() -> None:
    async def main() -> None:
        one, two = await two_replicas(Exchange())
        one.metrics.streams.labels("completed", "http").inc(3)
        two.metrics.streams.labels("completed", "http").inc(2)
        for replica in (one, two):
            replica.metrics.ttfa.observe(0.2)
            replica.metrics.requests.labels("GET", "/health", "200").inc()
        peer_texts = [text for text in await one.ask("metrics", ()) if isinstance(text, str)]
        text = one.metrics.render(peer_texts).decode()
        declared = [line for line in text.splitlines() if line.startswith("# TYPE ")]
        assert len(declared) == len(set(declared)), "a family declared twice: strict scrapers reject the page"
        families = {family.name: family for family in text_string_to_metric_families(text)}
        streams = {
            sample.labels["replica"]: sample.value
            for sample in families["xtts_streams"].samples
            if sample.name == "xtts_streams_total"
        }
        assert streams == {"one": 3.0, "two": 2.0}
        capacity = [(s.labels, s.value) for s in families["xtts_request_capacity"].samples]
        assert sorted(capacity, key=str) == [({"replica": "one"}, 4.0), ({"replica": "two"}, 4.0)]

    run(main)


def test_a_server_on_its_own_has_no_replica_label() -> None:
    metrics = Metrics(LiveFigures(lambda: 0, lambda: 0, lambda: 4, lambda: None))
    assert "replica" not in metrics.render().decode()


def test_only_dead_writers_temporary_files_are_removed(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, 1024, 512)
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    writing = tmp_path / f".tmp-{os.getpid()}@{host}~abc.safetensors"  # a live replica saving right now
    crashed = tmp_path / f".tmp-{dead.stdout.strip()}@{host}~def.safetensors"
    unnamed = tmp_path / ".tmp-old-style.safetensors"
    elsewhere = tmp_path / ".tmp-1@another-machine~ghi.safetensors"  # another host's replica: by age only
    for path in (writing, crashed, unnamed, elsewhere):
        path.write_bytes(b"half a voice")
    assert store.remove_leftovers() == 2
    assert writing.exists() and elsewhere.exists() and not crashed.exists() and not unnamed.exists()
    old = time.time() - 3600
    os.utime(elsewhere, (old, old))
    assert store.remove_leftovers() == 1 and not elsewhere.exists() and writing.exists()


def test_client_settings_set_through_one_replica_apply_on_every_replica(tmp_path: Path) -> None:
    path = tmp_path / "voices" / ".xtts-api-settings.json"
    one, two = ClientSettingsFile(path), ClientSettingsFile(path)
    assert one.read(None) == {}
    one.update(None, {"temperature": 0.5})
    two.update("key-a", {"speed": 1.5})
    assert two.read(None) == {"temperature": 0.5} and one.read("key-a") == {"speed": 1.5}
    two.update(None, {"top_k": 10})
    assert one.read(None) == {"temperature": 0.5, "top_k": 10}  # merged, and not stale in `one`'s cache


def test_concurrent_client_settings_from_several_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    writer = (
        "import sys; from pathlib import Path; from services.client_settings import ClientSettingsFile\n"
        "store = ClientSettingsFile(Path(sys.argv[1]))\n"
        "for i in range(30): store.update(sys.argv[2], {f'v{i}': i})\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", writer, str(path), f"key-{n}"], cwd=Path(__file__).parent.parent)
        for n in range(3)
    ]
    assert [process.wait(60) for process in processes] == [0, 0, 0]
    store = ClientSettingsFile(path)
    assert all(store.read(f"key-{n}") == {f"v{i}": i for i in range(30)} for n in range(3))
    assert not list(tmp_path.glob(".tmp-*"))


def test_an_unreadable_client_settings_file_means_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{not json")
    assert ClientSettingsFile(path).read(None) == {}
