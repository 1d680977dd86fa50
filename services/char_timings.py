"""When each character of a segment is heard: character timings laid over its audio as it streams.

Voice-agent frameworks (Pipecat, LiveKit) read them to know which words were spoken before an interruption, adding
each message's timings to a clock message by message. So every piece of audio sent carries the characters heard in
it, with times from that piece's start, the last of them ending where the piece ends; every character of the
segment comes exactly once, in order, and every piece carries at least one (a piece without any would stop such a
clock).

How the times are derived (the fallback the issue allows, documented in the README): XTTS's engine does not report
yet which text token each audio token attended to, so a segment's characters are spread over its audio by weight
(a letter or digit 1, a space 0.5, punctuation 1.5 for the pause it makes) at a speaking rate learned from the
segments already spoken in the conversation (`SpeakingRate`, characters per second of this voice at speed 1).
While audio streams in, the rate decides which characters a piece holds; within a piece, its duration is spread
over its characters by weight. The end of a segment is only known after its last chunk, so each piece holds back
the last `HOLDBACK_S` of its audio (at most half of it); the held audio goes out with the next piece, and at the end
with the characters still unheard, so the last character ends where the audio ends.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from services.engine.pcm import OUTPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES

HOLDBACK_S = 0.08
DEFAULT_WEIGHT_PER_S = 14.0
"""Weighted characters a second before a conversation has spoken a segment (XTTS v2 in English at speed 1)."""
_LEARNING = 0.5  # how much each finished segment moves the rate


@dataclass(frozen=True)
class CharTimings:
    """Characters and their times in ms, from the start of the audio they are heard in."""

    chars: list[str]
    start_ms: list[int]
    duration_ms: list[int]

    @property
    def end_ms(self) -> int:
        return self.start_ms[-1] + self.duration_ms[-1] if self.chars else 0


def char_weight(char: str) -> float:
    if char.isspace():
        return 0.5
    if unicodedata.category(char).startswith("P"):
        return 1.5
    return 1.0


@dataclass
class SpeakingRate:
    """Weighted characters a second this conversation's voice speaks at speed 1, learned segment by segment."""

    weight_per_s: float = DEFAULT_WEIGHT_PER_S

    def learn(self, weight: float, seconds: float, speed: float) -> None:
        if weight > 0 and seconds > 0.2:
            observed = weight / seconds / speed
            self.weight_per_s += _LEARNING * (observed - self.weight_per_s)


def spread(text: str, start_s: float, end_s: float) -> CharTimings:
    """`text`'s characters over [start_s, end_s] by weight, in ms from start_s (ms boundaries rounded on the
    absolute clock, so consecutive pieces add up exactly)."""
    if not text:
        return CharTimings([], [], [])
    weights = [char_weight(char) for char in text]
    total = sum(weights)
    origin = round(start_s * 1000)
    bounds, done = [], 0.0
    for weight in [0.0, *weights]:
        done += weight
        bounds.append(round((start_s + (end_s - start_s) * done / total) * 1000) - origin)
    starts = bounds[:-1]
    return CharTimings(list(text), starts, [end - start for start, end in zip(starts, bounds[1:], strict=True)])


@dataclass
class CharTimeline:
    """One segment's text laid over its audio as it streams: `take` each PCM chunk, then `finish`."""

    text: str
    rate: SpeakingRate
    speed: float = 1.0
    _sent_samples: int = 0
    _aligned_s: float = 0.0
    """Where the audio covered by characters sent so far ends."""
    _held: bytes = b""
    _next: int = 0
    _cumulative: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        total = 0.0
        self._cumulative = [0.0]
        for char in self.text:
            total += char_weight(char)
            self._cumulative.append(total)

    def take(self, pcm: bytes) -> tuple[bytes, CharTimings | None]:
        """The audio to send now (this chunk less a held-back tail, plus the last tail) and the characters heard
        in it. Once only the segment's last character is left (the rate ran ahead of the voice), audio goes out
        without characters, and the last piece's times count from the first of those pieces."""
        audio = self._held + pcm
        samples = len(audio) // SAMPLE_WIDTH_BYTES
        tail = min(round(HOLDBACK_S * OUTPUT_SAMPLE_RATE), samples // 2)
        release = audio[: (samples - tail) * SAMPLE_WIDTH_BYTES]
        if not release:
            self._held = audio
            return b"", None
        self._held = audio[len(release) :]
        self._sent_samples += len(release) // SAMPLE_WIDTH_BYTES
        end_s = self._sent_samples / OUTPUT_SAMPLE_RATE
        last = len(self.text) - 1  # the last character waits for the end of the audio
        if self._next >= last:
            return release, None
        heard = self._next + 1  # every piece carries a character
        seconds_per_weight = 1.0 / (self.rate.weight_per_s * self.speed)
        while heard < last and self._cumulative[heard + 1] * seconds_per_weight <= end_s:
            heard += 1
        return release, self._heard(heard, end_s)

    def finish(self) -> tuple[bytes, CharTimings | None]:
        """The held audio and every character not yet heard, the last ending where the audio ends; the rate learns
        from the whole segment."""
        self._sent_samples += len(self._held) // SAMPLE_WIDTH_BYTES
        end_s = self._sent_samples / OUTPUT_SAMPLE_RATE
        self.rate.learn(self._cumulative[-1], end_s, self.speed)
        audio, self._held = self._held, b""
        return audio, (self._heard(len(self.text), end_s) if self._next < len(self.text) else None)

    def _heard(self, heard: int, end_s: float) -> CharTimings:
        """Characters up to `heard` over the audio since the last piece that carried characters."""
        start_s = self._aligned_s
        self._aligned_s = end_s
        text, self._next = self.text[self._next : heard], heard
        return spread(text, start_s, end_s)
