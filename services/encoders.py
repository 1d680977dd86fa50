"""Incremental audio encoders: 16-bit mono PCM at 24 kHz in, a container's bytes out as they are made.

WAV and raw PCM are framed by hand; MP3, Opus (in Ogg), AAC (ADTS) and FLAC go through PyAV (FFmpeg's
encoders and muxers) writing into memory, and each `encode` returns what the muxer has written so far.
Nothing is re-encoded and no temporary files are used.
"""

from __future__ import annotations

import struct
from typing import cast

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer

from services.engine.pcm import CHANNELS, OUTPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES
from services.errors import InvalidInput
from services.formats import MEDIA_TYPES, OutputFormat, default_rate, format_problem
from services.g711 import linear_to_alaw, linear_to_mulaw

# container, codec and bit rate (speech-friendly) of the formats FFmpeg encodes
_CODECS: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", 96_000),
    "opus": ("ogg", "libopus", 48_000),
    "aac": ("adts", "aac", 96_000),
    "flac": ("flac", "flac", None),
}
# G.711 companders: 16-bit PCM in, a byte a sample out (after resampling; the phone network's 8 kHz by default)
_COMPANDERS = {"ulaw": linear_to_mulaw, "alaw": linear_to_alaw}
# A streamed WAV's length is unknown when its header goes out: the largest sizes tell players to
# read until the connection ends (what ffmpeg and browsers do with such streams).
_UNKNOWN_SIZE = 0xFFFFFFFF


def wav_header(data_bytes: int | None, sample_rate: int = OUTPUT_SAMPLE_RATE) -> bytes:
    """A 44-byte PCM WAV header; `None` for a stream whose length is not known yet."""
    byte_rate = sample_rate * CHANNELS * SAMPLE_WIDTH_BYTES
    data_size = _UNKNOWN_SIZE - 36 if data_bytes is None else data_bytes
    riff_size = _UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, CHANNELS, sample_rate, byte_rate, CHANNELS * SAMPLE_WIDTH_BYTES, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


def check_format(output_format: str, sample_rate: int) -> None:
    """Refuse a format/rate pair the encoder cannot do, before any model work."""
    if problem := format_problem(output_format, sample_rate):
        raise InvalidInput(problem, output_format=output_format, sample_rate=sample_rate)


class _MemorySink:
    """A write-only, non-seekable file for PyAV: keeps what the muxer writes until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class AudioEncoder:
    """Encodes one stream. Not thread-safe; call it from one thread at a time, in order."""

    def __init__(self, output_format: OutputFormat, sample_rate: int | None = None) -> None:
        sample_rate = default_rate(output_format) if sample_rate is None else sample_rate  # ulaw, alaw: 8 kHz
        check_format(output_format, sample_rate)
        self.output_format = output_format
        self.sample_rate = sample_rate
        self.media_type = MEDIA_TYPES[output_format]
        self._resampler = (
            av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            if sample_rate != OUTPUT_SAMPLE_RATE
            else None
        )
        self._sink: _MemorySink | None = None
        self._container: OutputContainer | None = None
        self._stream: AudioStream | None = None
        self._pts = 0
        if output_format in _CODECS:
            container_format, codec, bit_rate = _CODECS[output_format]
            self._sink = _MemorySink()
            # Ogg otherwise holds a second of audio per page: flush pages every 100 ms for streaming.
            options = {"page_duration": "100000"} if container_format == "ogg" else {}
            self._container = av.open(self._sink, mode="w", format=container_format, options=options)
            self._stream = cast(AudioStream, self._container.add_stream(codec, rate=sample_rate, layout="mono"))
            if bit_rate:
                self._stream.bit_rate = bit_rate

    @property
    def needs_thread(self) -> bool:
        """True when encoding does real work (run it off the event loop)."""
        return self._container is not None or self._resampler is not None

    def start(self, known_pcm_bytes: int | None = None) -> bytes:
        """What goes out before any audio (the WAV header; containers write their own)."""
        if self.output_format != "wav":
            return b""
        data_bytes = None if known_pcm_bytes is None else self._resampled_size(known_pcm_bytes)
        return wav_header(data_bytes, self.sample_rate)

    def _resampled_size(self, pcm_bytes: int) -> int:
        samples = pcm_bytes // 2
        return (samples * self.sample_rate // OUTPUT_SAMPLE_RATE) * 2 if self._resampler else pcm_bytes

    def encode(self, pcm: bytes) -> bytes:
        """Encoded bytes for this PCM chunk (possibly empty while an encoder fills a frame)."""
        frames = self._frames(pcm)
        if self._container is None:
            linear = b"".join(bytes(frame.planes[0])[: frame.samples * 2] for frame in frames)
            return self._compand(linear if self._resampler else pcm)
        return self._mux(frames)

    def _compand(self, linear: bytes) -> bytes:
        compander = _COMPANDERS.get(self.output_format)
        return compander(linear) if compander is not None else linear

    def finish(self) -> bytes:
        """Flush the encoder and close the container; the last bytes of the stream."""
        tail = b""
        if self._resampler is not None:
            flushed = self._resampler.resample(None)
            tail = (
                self._mux(flushed)
                if self._container
                else self._compand(b"".join(bytes(frame.planes[0])[: frame.samples * 2] for frame in flushed))
            )
        if self._container is None or self._stream is None or self._sink is None:
            return tail
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return tail + self._sink.take()

    def _frames(self, pcm: bytes) -> list[av.AudioFrame]:
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = OUTPUT_SAMPLE_RATE
        if self._resampler is None:
            return [frame]
        return list(self._resampler.resample(frame))

    def _mux(self, frames: list[av.AudioFrame]) -> bytes:
        assert self._container is not None and self._stream is not None and self._sink is not None
        for frame in frames:
            frame.pts = self._pts
            self._pts += frame.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()


def encode_whole(pcm: bytes, output_format: OutputFormat, sample_rate: int) -> bytes:
    """A complete file (a WAV gets exact sizes)."""
    encoder = AudioEncoder(output_format, sample_rate)
    return encoder.start(known_pcm_bytes=len(pcm)) + encoder.encode(pcm) + encoder.finish()
