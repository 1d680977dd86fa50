"""How to speak: the generation settings every API family takes, defined once.

`GenerationOptions` holds each setting with its bounds, description, examples and coqui's default (XTTS v2's
published config). The API families share it: ours and the WebSocket's config inherit it whole; OpenAI's and
xtts-api-server's take the settings they have with `option()` (their own defaults beside them, in
`models/inputs.py` and `models/xtts_api.py`). Below the API the service takes the same fields as `SpeechOptions`
(`services/speech.py`), the one conversion to the engine's settings; `tests/test_generation_options.py` fails when
the two lists drift apart or a setting does not reach the engine.

A new setting: a field here, one in `SpeechOptions` with its line in `generation_params`, and a line in
`models/xtts_api.py` if xtts-api-server's clients should set it too.

Numbers are strict (a bool is not an integer, "1_000" is not 1000; `model_config` below): JSON clients send
numbers. Clients whose values arrive as text (xtts-api-server's, coqui's `stream_chunk_size`) convert plain
decimal text first with `from_text`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic.fields import FieldInfo

# Text a client may send for a number: ASCII digits, an optional sign, point and exponent; no "_", no spaces.
_PLAIN_INTEGER = re.compile(r"[+-]?[0-9]+")
_PLAIN_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_LONGEST_NUMBER_TEXT = 40


class GenerationOptions(BaseModel):
    """How XTTS samples and paces speech; defaults are XTTS v2's published config (coqui's)."""

    model_config = ConfigDict(strict=True)

    temperature: float = Field(
        0.75, gt=0, le=5, description="Softmax temperature of the GPT; higher varies more.", examples=[0.65]
    )
    top_p: float = Field(
        0.85,
        gt=0,
        le=1,
        description="Nucleus sampling: keep the most likely tokens up to this mass.",
        examples=[0.9],
    )
    top_k: int = Field(
        50, ge=0, le=1024, description="Sample among the k most likely tokens (0 turns it off).", examples=[30]
    )
    repetition_penalty: float = Field(
        5.0, ge=1, le=50, description="Penalty on audio tokens already generated.", examples=[2.0]
    )
    speed: float = Field(
        1.0, ge=0.25, le=4.0, description="Speaking rate, 0.25-4.0; 1.0 is the voice's own pace.", examples=[1.2]
    )
    stream_chunk_size: int = Field(
        20,
        ge=1,
        le=400,
        description="Largest chunk in GPT tokens (about 46 ms of audio each). Chunks start short for a fast "
        "first sound and double up to this.",
        examples=[40],
    )
    enable_text_splitting: bool = Field(
        True, description="Split long text into sentences within XTTS's per-language limits.", examples=[False]
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="Seed for reproducible sampling; the one used is in X-Seed.",
        examples=[42],
    )


class IgnoredOptions(BaseModel):
    """Settings that coqui's and xtts-api-server's clients send and streaming XTTS has no use for: taken
    (within bounds) and ignored."""

    model_config = ConfigDict(strict=True)

    length_penalty: float = Field(
        1.0,
        ge=-10,
        le=10,
        description="Accepted for compatibility; XTTS only uses it in beam search, which streaming does not do.",
    )


_SETTINGS: dict[str, FieldInfo] = {**GenerationOptions.model_fields, **IgnoredOptions.model_fields}


def option(name: str, **family: Any) -> Any:
    """Setting `name` as defined above (bounds, description, examples, default), for an API family that takes
    only some settings; `family` holds what that family says otherwise (its default, a description)."""
    return FieldInfo.merge_field_infos(_SETTINGS[name], **family)


def from_text(value: object) -> object:
    """A number or boolean sent as plain text ("50", "0.75", "true") as that value; anything else unchanged, for
    the strict check to judge: "1_000", " 5", "0x10", "nan" and `true` for a number stay refused."""
    if not isinstance(value, str) or len(value) > _LONGEST_NUMBER_TEXT:
        return value
    if _PLAIN_INTEGER.fullmatch(value):
        return int(value)
    if _PLAIN_DECIMAL.fullmatch(value):
        return float(value)
    return {"true": True, "false": False}.get(value, value)


class TextValues(BaseModel):
    """Settings of an API whose clients send them as text (xtts-api-server's: SillyTavern sends jQuery's .val()
    strings, "0.75", "50"): plain decimal text is taken as the number; otherwise as strict as JSON numbers."""

    model_config = ConfigDict(strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        return from_text(value)


def all_optional(model: type[TextValues], name: str) -> type[TextValues]:
    """`model`'s fields, each optional with None for "not given": a partial update of its settings."""
    fields: dict[str, Any] = {}
    for field, info in model.model_fields.items():
        annotation: Any = info.annotation
        fields[field] = (annotation | None, FieldInfo.merge_field_infos(info, default=None))
    return create_model(name, __base__=TextValues, __module__=model.__module__, **fields)
