"""Prometheus metrics: request counts, stream latency and speed, load, cache and model facts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
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
    jobs: Callable[[], dict[str, int]] | None = None  # long-form jobs by state; once loaded


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
        if figures.jobs is not None:
            by_state = figures.jobs()
            family = GaugeMetricFamily("xtts_jobs", "Long-form jobs by state (in DATA_DIR's store).", labels=["state"])
            for state in ("queued", "running", "completed", "failed", "cancelled"):
                family.add_metric([state], by_state.get(state, 0))
            yield family


class _Merged(Collector):
    """This replica's metrics labelled `replica`, merged with the other replicas' (already labelled) ones.

    Every replica's series, this one's included, are read back from their exposition text, so families
    merge by the names the text uses (prometheus_client writes a counter's `_created` as a family of its own).
    """

    def __init__(self, own: CollectorRegistry, replica: str, peer_texts: Sequence[str]) -> None:
        self.own = own
        self.replica = replica
        self.peer_texts = peer_texts

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        own = text_string_to_metric_families(generate_latest(self.own).decode())
        for family in (
            *self._labelled(own),
            *(f for text in self.peer_texts for f in text_string_to_metric_families(text)),
        ):
            known = families.setdefault(family.name, family)
            if known is not family and known.type == family.type:
                known.samples.extend(family.samples)
        yield from families.values()

    def _labelled(self, families: Iterable[Metric]) -> Iterator[Metric]:
        for family in families:
            family.samples = [s._replace(labels={**s.labels, "replica": self.replica}) for s in family.samples]
            yield family


class Metrics:
    """One registry per app (so several apps in one process never collide). As one replica of several,
    every series carries a `replica` label, and a scrape can include the other replicas' series."""

    def __init__(self, figures: LiveFigures, replica: str | None = None) -> None:
        self.figures = figures
        self.replica = replica
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xtts_http_requests", "HTTP requests by route and status.", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.streams = Counter(
            "xtts_streams", "Synthesis sessions by outcome and API family (http, websocket, wyoming).",
            ["outcome", "family"], registry=self.registry,
        )  # fmt: skip
        self.ttfa = Histogram(
            "xtts_time_to_first_audio_seconds", "From request to the first audio chunk.", buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.rtf = Histogram(
            "xtts_real_time_factor", "Generation seconds per audio second (below 1 is faster than real time).",
            buckets=_RTF_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.audio_seconds = Counter("xtts_audio_seconds", "Seconds of audio generated.", registry=self.registry)
        self.job_audio_seconds = Counter(
            "xtts_job_audio_seconds", "Seconds of audio long-form jobs made (sentences finished).",
            registry=self.registry,
        )  # fmt: skip
        self.model_load_seconds = Gauge(
            "xtts_model_load_seconds", "Seconds the model took to load (0 until it has).", registry=self.registry
        )
        self.registry.register(_LiveCollector(figures))

    def observe_session(self, session: StreamSession) -> None:
        self.streams.labels(session.state.value, session.family).inc()
        self.audio_seconds.inc(session.audio_seconds)
        if session.first_audio_at is not None:
            self.ttfa.observe(session.first_audio_at - session.created_at)
        if session.started_at is not None and session.finished_at is not None and session.audio_seconds > 0:
            self.rtf.observe((session.finished_at - session.started_at) / session.audio_seconds)

    def render(self, peer_texts: Sequence[str] = ()) -> bytes:
        """The exposition text: this process's series, plus the other replicas' when given."""
        if self.replica is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_Merged(self.registry, self.replica, peer_texts))
        return generate_latest(merged)
