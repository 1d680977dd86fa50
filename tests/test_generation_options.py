"""Generation settings are defined once in the API's schema (models/generation.py) and once below it
(services/speech.py's SpeechOptions): these tests fail when the two lists drift apart, when an API family
redefines a setting's bounds by hand, or when a setting stops reaching the engine."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, fields, replace
from typing import Any

import pytest

import services.speech as speech_module
from api.speech_jobs import options_of
from models.generation import GenerationOptions, IgnoredOptions
from models.inputs import OpenAISpeechRequest, SocketConfig, SpeechRequest
from models.xtts_api import TtsSettings, TtsSettingsUpdate
from services.admission import AdmissionGate
from services.engine.params import GenerationParams
from services.sessions import SessionRegistry
from services.speech import GivenLatents, SpeechJob, SpeechLimits, SpeechOptions, SpeechService, generation_params

SERVICE_FIELDS = [option.name for option in fields(SpeechOptions)]
FAMILIES = [SpeechRequest, SocketConfig, OpenAISpeechRequest, TtsSettings, TtsSettingsUpdate]
LIMITS = SpeechLimits(max_text_length=100, first_chunk_tokens=1, max_audio_tokens=40)


def example(name: str) -> Any:
    """A valid value of setting `name` other than its default: its first documented example."""
    info = GenerationOptions.model_fields[name]
    assert info.examples, f"{name} needs an example in models/generation.py"
    assert info.examples[0] != info.default, f"{name}'s first example must differ from its default"
    return info.examples[0]


def test_the_api_schema_and_the_service_take_the_same_settings_with_the_same_defaults() -> None:
    assert list(GenerationOptions.model_fields) == SERVICE_FIELDS
    assert GenerationOptions().model_dump() == asdict(SpeechOptions())


def test_the_defaults_are_coquis() -> None:
    coqui = {"temperature": 0.75, "top_p": 0.85, "top_k": 50, "repetition_penalty": 5.0, "speed": 1.0}
    assert asdict(SpeechOptions()) == {**coqui, "stream_chunk_size": 20, "enable_text_splitting": True, "seed": None}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.__name__)
def test_every_family_takes_each_setting_with_the_shared_bounds(family: type) -> None:
    shared = {**GenerationOptions.model_fields, **IgnoredOptions.model_fields}
    for name, info in family.model_fields.items():
        if name in shared:
            assert info.metadata == shared[name].metadata, f"{family.__name__}.{name} has bounds of its own"


class PlanRecorder:
    """The little of an engine that opening a stream uses; records what `plan` was asked."""

    languages = ("en",)

    def __init__(self) -> None:
        self.splits: list[bool] = []

    async def plan(self, text: str, language: str, split: bool) -> list[str]:
        self.splits.append(split)
        return [text]

    def normalize_latents(self, gpt_cond_latent: Any, speaker_embedding: Any) -> object:
        return object()


def what_the_engine_gets(options: SpeechOptions, monkeypatch: pytest.MonkeyPatch) -> tuple[GenerationParams, bool]:
    """The engine's settings and `plan`'s split flag for a job with these options, through SpeechService.open."""
    made: list[GenerationParams] = []

    def recording(options: SpeechOptions, seed: int, limits: SpeechLimits) -> GenerationParams:
        made.append(generation_params(options, seed, limits))
        return made[-1]

    monkeypatch.setattr(speech_module, "generation_params", recording)
    engine = PlanRecorder()
    service = SpeechService(engine, None, SessionRegistry(10, 60), AdmissionGate(1, 1, 5), LIMITS)
    job = SpeechJob("Hello.", "en", GivenLatents([[0.0]], [0.0]), options)
    stream = asyncio.run(service.open(job))
    assert stream.seed == made[-1].seed
    return made[-1], engine.splits[-1]


@pytest.mark.parametrize("name", SERVICE_FIELDS)
def test_every_setting_reaches_the_engine(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    baseline = SpeechOptions(seed=1)
    changed = replace(baseline, **{name: example(name)})
    assert what_the_engine_gets(changed, monkeypatch) != what_the_engine_gets(baseline, monkeypatch)


def test_options_of_takes_each_familys_own_values_and_defaults() -> None:
    sent = {name: example(name) for name in SERVICE_FIELDS}
    ours = SpeechRequest(text="Hi.", language="en", speaker_id="x", **sent)
    assert asdict(options_of(ours, ours.seed)) == sent
    xtts_api = TtsSettings(**{name: value for name, value in sent.items() if name != "seed"})
    assert asdict(options_of(xtts_api, None)) == {**sent, "seed": None}
    assert options_of(TtsSettings(), None).stream_chunk_size == 100  # upstream's default, not coqui's 20
    openai = OpenAISpeechRequest(input="Hi.", voice="alloy", speed=1.5, seed=3)
    assert options_of(openai, openai.seed) == SpeechOptions(speed=1.5, seed=3)
