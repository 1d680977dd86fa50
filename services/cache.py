"""The speaker-latent cache: ready-to-use voice latents on the model's device, loaded once per key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import TTLCache

from services.engine.latents import VoiceLatents


class _CountingTTLCache(TTLCache[str, VoiceLatents]):
    """A TTL + LRU cache that counts what leaves it by size or by age."""

    evictions = 0

    def popitem(self) -> tuple[str, VoiceLatents]:
        item = super().popitem()
        self.evictions += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[str, VoiceLatents]]:  # type: ignore[override]
        expired = list(super().expire(time))
        self.evictions += len(expired)
        return expired


@dataclass(frozen=True)
class CacheStats:
    """What GET /cache/stats reports."""

    size: int
    max_size: int
    ttl_s: float
    hits: int
    misses: int
    evictions: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class SpeakerCache:
    """TTL/LRU cache with single-flight loading: concurrent misses for one key share one load."""

    def __init__(self, max_size: int, ttl_s: float, timer: Callable[[], float] = time.monotonic) -> None:
        self._entries = _CountingTTLCache(maxsize=max_size, ttl=ttl_s, timer=timer)
        self._loading: dict[str, asyncio.Future[VoiceLatents]] = {}
        self._generation: dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[VoiceLatents]]) -> VoiceLatents:
        """The cached latents for `key`, or the result of one `load()` shared by everyone asking now."""
        cached = self._entries.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        pending = self._loading.get(key)
        if pending is not None:
            self.hits += 1  # served without a load of its own
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[VoiceLatents] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        generation = self._generation.get(key, 0)
        try:
            latents = await load()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters, if any, re-raise it themselves
            raise
        finally:
            self._loading.pop(key, None)
        # A delete or overwrite during the load makes this result stale: hand it out, don't keep it.
        if self._generation.get(key, 0) == generation:
            self._entries[key] = latents
        future.set_result(latents)
        return latents

    def invalidate(self, key: str) -> None:
        """Drop `key` (its voice was deleted or overwritten)."""
        self._generation[key] = self._generation.get(key, 0) + 1
        self._entries.pop(key, None)

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        count = len(self._entries)
        for key in list(self._entries.keys()):
            self.invalidate(key)
        return count

    def stats(self) -> CacheStats:
        self._entries.expire()
        return CacheStats(
            size=len(self._entries),
            max_size=int(self._entries.maxsize),
            ttl_s=float(self._entries.ttl),
            hits=self.hits,
            misses=self.misses,
            evictions=self._entries.evictions,
        )
