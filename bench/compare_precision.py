"""Compare GPT/vocoder precisions on your own checkpoint, by ear and by figures.

    make compare-precision CUSTOM_MODEL_PATH=~/models/xtts_v2 [TEXT="..."] [SPEAKER=name] [OUT=folder]

For each precision this speaks the same text with the same seed and writes `<OUT>/<precision>.wav`
side by side, then prints (and writes to `<OUT>/figures.json`) the real-time factor and the fidelity
against float32 measured on float32's own tokens. Random weights (DUMMY_MODEL) work too, but only a
trained checkpoint can tell whether a precision still sounds right.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import wave
from pathlib import Path

from bench import precision
from config import Settings
from main import model_choice
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.tts import TTSEngine

DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog. A second sentence, with a comma, lets you hear the pauses."


async def speak(engine: TTSEngine, text: str, speaker: str, seed: int) -> tuple[bytes, float]:
    sentences = await engine.plan(text, "en", True)
    voice = engine.builtin_speakers[speaker]
    params = GenerationParams(sampling=SamplingSettings(repetition_penalty=5.0), seed=seed)
    started = time.perf_counter()
    stream = engine.synthesize(sentences, voice, params, threading.Event())
    pcm = b"".join([chunk async for chunk in stream])
    return pcm, time.perf_counter() - started


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24000)
        out.writeframes(pcm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--speaker", default="", help="a built-in speaker (default: the first)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("precision-comparison"))
    args = parser.parse_args()
    settings = Settings(GPT_PRECISION="float32", VOCODER_PRECISION="float32", VOCODER_BACKEND="torch")
    reference_engine = TTSEngine.start(model_choice(settings))  # every variant runs on its model thread
    loaded, thread = reference_engine.loaded, reference_engine.thread
    speakers = sorted(loaded.model.speaker_manager.speakers) if hasattr(loaded.model, "speaker_manager") else []
    speaker = args.speaker or (speakers[0] if speakers else "")
    if not speaker:
        raise SystemExit("this checkpoint has no built-in speakers (speakers_xtts.pth); give --speaker")
    args.out.mkdir(parents=True, exist_ok=True)
    voice = reference_engine.builtin_speakers[speaker]
    text_tokens, audio = precision.reference_tokens(reference_engine, voice, args.text, 200, args.seed)
    figures: dict[str, dict[str, float | str]] = {}
    for gpt_precision, vocoder_precision in precision.variants(loaded.device):
        name = precision.label(gpt_precision, vocoder_precision)
        model = thread.submit(precision.variant, loaded, gpt_precision, vocoder_precision).result()
        engine = TTSEngine(model, thread)
        engine.warm_up()
        pcm, seconds = asyncio.run(speak(engine, args.text, speaker, args.seed))
        path = args.out / f"gpt-{gpt_precision}_vocoder-{vocoder_precision}.wav"
        write_wav(path, pcm)
        audio_s = len(pcm) / 48000
        figures[name] = {
            "wav": str(path),
            "rtf": round(seconds / max(audio_s, 1e-9), 3),
            **thread.submit(precision.fidelity, loaded.model, model.model, voice, text_tokens, audio).result(),
        }
        print(f"{name:34s} rtf={figures[name]['rtf']:.2f}  {figures[name]}", flush=True)
    (args.out / "figures.json").write_text(json.dumps({"speaker": speaker, "text": args.text, **figures}, indent=2))
    reference_engine.shutdown()
    print(f"\nwrote {len(figures)} WAVs and figures.json to {args.out}/")


if __name__ == "__main__":
    main()
