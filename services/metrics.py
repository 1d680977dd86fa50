"""Prometheus metrics: request counts, stream latency and speed, load, cache and model facts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.sessions import StreamSession

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_RTF_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class LiveFigures:
    """Read at scrape time; each returns the current value (None when not known yet)."""

    in_flight: Callable[[], int]
    queued: Callable[[], int]
    capacity: Callable[[], int]
    cache: Callable[[], tuple[int, int, int, int] | None]  # size, hits, misses, evictions
    batch: Callable[[], tuple[int, int, int]] | None = None  # streams decoding, MAX_BATCH_SIZE, steps; once loaded


class _LiveCollector(Collector):
    def __init__(self, figures: LiveFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        figures = self.figures
        yield GaugeMetricFamily("xtts_requests_in_flight", "Requests admitted and not finished.", figures.in_flight())
        yield GaugeMetricFamily("xtts_requests_queued", "Requests waiting for a slot.", figures.queued())
        yield GaugeMetricFamily("xtts_request_capacity", "MAX_CONCURRENT_REQUESTS.", figures.capacity())
        if (cache := figures.cache()) is not None:
            size, hits, misses, evictions = cache
            yield GaugeMetricFamily("xtts_speaker_cache_size", "Voices in the latent cache.", size)
            yield CounterMetricFamily("xtts_speaker_cache_hits", "Latent cache hits.", hits)
            yield CounterMetricFamily("xtts_speaker_cache_misses", "Latent cache misses.", misses)
            yield CounterMetricFamily("xtts_speaker_cache_evictions", "Entries evicted or expired.", evictions)
        if figures.batch is not None:
            decoding, max_batch_size, steps = figures.batch()
            yield GaugeMetricFamily("xtts_batch_streams", "Streams in the decoding batch now.", decoding)
            yield GaugeMetricFamily("xtts_batch_max_size", "MAX_BATCH_SIZE.", max_batch_size)
            yield CounterMetricFamily("xtts_batch_steps", "Batched GPT decode steps.", steps)


class Metrics:
    """One registry per app (so several apps in one process never collide)."""

    def __init__(self, figures: LiveFigures) -> None:
        self.figures = figures
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xtts_http_requests", "HTTP requests by route and status.", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.streams = Counter("xtts_streams", "Synthesis sessions by outcome.", ["outcome"], registry=self.registry)
        self.ttfa = Histogram(
            "xtts_time_to_first_audio_seconds", "From request to the first audio chunk.", buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.rtf = Histogram(
            "xtts_real_time_factor", "Generation seconds per audio second (below 1 is faster than real time).",
            buckets=_RTF_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.audio_seconds = Counter("xtts_audio_seconds", "Seconds of audio generated.", registry=self.registry)
        self.model_load_seconds = Gauge(
            "xtts_model_load_seconds", "Seconds the model took to load (0 until it has).", registry=self.registry
        )
        self.registry.register(_LiveCollector(figures))

    def observe_session(self, session: StreamSession) -> None:
        self.streams.labels(session.state.value).inc()
        self.audio_seconds.inc(session.audio_seconds)
        if session.first_audio_at is not None:
            self.ttfa.observe(session.first_audio_at - session.created_at)
        if session.started_at is not None and session.finished_at is not None and session.audio_seconds > 0:
            self.rtf.observe((session.finished_at - session.started_at) / session.audio_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
