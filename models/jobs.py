"""Long-form jobs' request and answer: what POST /v1/jobs takes and every job route returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from models.generation import GenerationOptions, TextValues
from models.inputs import Language, Text

JobFormat = Literal["mp3", "opus", "m4b", "flac", "wav"]


class JobRequest(GenerationOptions):
    """A long text to narrate in the background (JSON); or send a file with the same fields as multipart."""

    model_config = GenerationOptions.model_config | {
        "json_schema_extra": {
            "examples": [
                {"text": "Chapter one. It was a bright cold day in April.", "voice": "my-voice", "format": "m4b"}
            ]
        }
    }

    text: Text | None = Field(
        None,
        description="The text (or send a `.txt`, `.md` or `.epub` file as multipart field `file` instead).",
    )
    voice: Text = Field(description="A saved voice id or a built-in speaker name.", examples=["my-voice"])
    language: Language = "en"
    format: JobFormat = Field(
        "mp3",
        description="The result's format: `m4b` (AAC audiobook with chapter marks), `mp3`, `opus`, `flac` or "
        "`wav`; for input with chapters, the other formats also get one file per chapter.",
    )
    title: Text = Field("", max_length=200, description="The result's title tag (an EPUB's own title otherwise).")


class JobForm(TextValues, JobRequest):
    """The multipart form's fields: the same as JSON's, each sent as text."""


class JobChapter(BaseModel):
    index: int = Field(description="1-based.")
    title: str
    start_s: float | None = Field(None, description="Where it starts in the result (once completed).")
    end_s: float | None = None
    audio_url: str | None = Field(None, description="Its own file (formats without chapter marks), once completed.")


class JobOut(BaseModel):
    """A job: where it is, how far, and its result once completed."""

    id: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    progress: float = Field(description="0-1, by characters spoken.")
    sentences_done: int
    sentences_total: int
    audio_seconds: float = Field(description="Audio made so far.")
    eta_seconds: float | None = Field(None, description="Seconds left at this server's pace (once running).")
    error: str | None = None
    voice: str
    language: str
    format: str
    title: str
    preview: str = Field(description="The text's first words.")
    seed: int = Field(description="Sentence n is spoken with seed + n: the same seed gives the same audio.")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    audio_url: str | None = Field(None, description="The result (HTTP Range supported), once completed.")
    audio_bytes: int | None = None
    duration_s: float | None = None
    chapters: list[JobChapter]
