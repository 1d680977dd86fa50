"""Check a Wyoming server from a shell, as Home Assistant talks to it: `describe`, then a `synthesize` saved as a WAV.

    python -m api.wyoming.check --host 127.0.0.1 --port 10200 --voice my-voice --out hello.wav "Hello there."

Prints the voices the server offers and how long the first audio took; exits 1 on an `error` event.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import wave

from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice


async def check(host: str, port: int, text: str, voice: str | None, out: str) -> int:
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Describe().event())
        while (event := await client.read_event()) is not None and not Info.is_type(event.type):
            if Error.is_type(event.type):
                print(f"error: {Error.from_event(event).text}", file=sys.stderr)
                return 1
        if event is None:
            print("the server closed the connection", file=sys.stderr)
            return 1
        program = Info.from_event(event).tts[0]
        print(f"{program.name} {program.version}: {len(program.voices)} voices, streaming: "
              f"{program.supports_synthesize_streaming}")  # fmt: skip
        for listed in program.voices:
            print(f"  {listed.name}: {listed.description}")
        started = time.monotonic()
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
        first_audio_s: float | None = None
        start, audio = None, bytearray()
        while (event := await client.read_event()) is not None and event.type != "audio-stop":
            if Error.is_type(event.type):
                print(f"error: {Error.from_event(event).text}", file=sys.stderr)
                return 1
            if AudioStart.is_type(event.type):
                start = AudioStart.from_event(event)
            elif AudioChunk.is_type(event.type):
                first_audio_s = first_audio_s or time.monotonic() - started
                audio += AudioChunk.from_event(event).audio
    if first_audio_s is None or start is None:
        print("no audio came back", file=sys.stderr)
        return 1
    with wave.open(out, "wb") as wav:
        wav.setframerate(start.rate)
        wav.setsampwidth(start.width)
        wav.setnchannels(start.channels)
        wav.writeframes(bytes(audio))
        seconds = wav.getnframes() / start.rate
    print(f"first audio after {first_audio_s:.3f} s; {seconds:.2f} s of audio written to {out}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", default="Hello from the XTTS server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10200)
    parser.add_argument("--voice", help="a saved voice or built-in speaker (default: the server's first)")
    parser.add_argument("--out", default="wyoming-check.wav")
    args = parser.parse_args()
    sys.exit(asyncio.run(check(args.host, args.port, args.text, args.voice, args.out)))


if __name__ == "__main__":
    main()
