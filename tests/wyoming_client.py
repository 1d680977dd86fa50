"""Home Assistant's side of Wyoming for the tests: a live server with WYOMING_PORT (the fake engine, noting what it
was asked to speak), and the `wyoming` package's own AsyncTcpClient reading answers as Home Assistant does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info

from services.engine.text import Sentence
from tests.conftest import LiveServer, app_settings, free_port, live_server
from tests.fakes import FakeEngine


class RecordingEngine(FakeEngine):
    """The fake engine, noting each text it was asked to speak and in which language."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.planned: list[tuple[str, str]] = []

    async def plan(self, text: str, language: str, split: bool) -> list[Sentence]:
        self.planned.append((text, language))
        return await super().plan(text, language, split)


@dataclass
class Wyoming:
    live: LiveServer
    port: int

    @property
    def engine(self) -> RecordingEngine:
        assert isinstance(self.live.engine, RecordingEngine)
        return self.live.engine

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncTcpClient]:
        async with AsyncTcpClient("127.0.0.1", self.port) as client:
            yield client


@contextmanager
def start(tmp_path: object, engine: RecordingEngine, **settings: object) -> Iterator[Wyoming]:
    port = free_port()
    values = app_settings(tmp_path, WYOMING_PORT=port, MAX_TEXT_LENGTH=300, **settings)  # type: ignore[arg-type]
    with live_server(engine, values) as live:
        yield Wyoming(live, port)


@dataclass
class Answer:
    events: list[tuple[float, Event]] = field(default_factory=list)

    def of(self, *types: str) -> list[Event]:
        return [event for _, event in self.events if event.type in types]

    def first_at(self, event_type: str) -> float:
        return next(at for at, event in self.events if event.type == event_type)

    @property
    def audio(self) -> bytes:
        return b"".join(AudioChunk.from_event(event).audio for event in self.of("audio-chunk"))


async def read_until(client: AsyncTcpClient, *last: str, answer: Answer | None = None, timeout_s: float = 30) -> Answer:
    answer = answer or Answer()
    async with asyncio.timeout(timeout_s):
        while True:
            event = await client.read_event()
            assert event is not None, "the server closed the connection"
            answer.events.append((time.monotonic(), event))
            if event.type in last:
                return answer


async def describe(client: AsyncTcpClient) -> Info:
    await client.write_event(Describe().event())
    return Info.from_event((await read_until(client, "info")).of("info")[0])


def assert_paired_audio(answer: Answer) -> None:
    """Every audio-start has exactly one audio-stop before the next start, in Wyoming's format."""
    open_audio = False
    for _, event in answer.events:
        if AudioStart.is_type(event.type):
            assert not open_audio
            start = AudioStart.from_event(event)
            assert (start.rate, start.width, start.channels) == (24000, 2, 1)
            open_audio = True
        elif AudioChunk.is_type(event.type):
            assert open_audio
        elif AudioStop.is_type(event.type):
            assert open_audio
            open_audio = False
    assert not open_audio
