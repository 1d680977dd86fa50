"""Server facts: languages, speakers, health and readiness."""

from __future__ import annotations

import os
import time
from collections import Counter

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from api.deps import EngineDep, ModelDep, StateDep
from api.errors import ERROR_RESPONSES
from api.state import ServerStatus
from api.studio_speakers import studio_speakers_json

router = APIRouter(tags=["server"], responses=ERROR_RESPONSES)


class ModelInfo(BaseModel):
    source: str | None = Field(description="dummy:tiny, dummy:full, custom:PATH or coqui:MODEL_NAME.")
    dummy: bool = Field(description="Random weights: the audio is noise, not speech.")
    device: str | None
    load_seconds: float | None
    gpt_precision: str | None = Field(description="The precision the GPT runs in (GPT_PRECISION, or what auto chose).")
    gpt_precision_reason: str | None = Field(description="`set` (GPT_PRECISION named it) or why auto chose it.")
    cpu: str | None = Field(description="The processor and the instruction-set flags that decide its kernels.")
    gpt_kernels: str | None = Field(description="What runs the GPT's linear layers, e.g. openvino-int8.")
    gpt_kernels_reason: str | None = Field(description="Why those kernels (what the CPU and runtimes offer).")
    vocoder_precision: str | None = Field(description="The vocoder's precision (VOCODER_PRECISION, or auto's).")
    vocoder_backend: str | None = Field(description="What runs the vocoder: torch or openvino (VOCODER_BACKEND).")
    vocoder_reason: str | None = Field(description="`set` (both named) or why auto chose the vocoder's path.")


class LoadInfo(BaseModel):
    in_flight: int = Field(description="Requests admitted and not yet finished.")
    queued: int = Field(description="Requests waiting for a slot (the one queue: beyond the batch too).")
    capacity: int = Field(description="Requests admitted at once: MAX_CONCURRENT_REQUESTS, at most the batch rows.")
    max_queue: int = Field(description="MAX_QUEUE_SIZE.")
    model_jobs: int = Field(description="Jobs sent to the model thread since start (batch steps, clones, warm-up).")
    decoding: int = Field(description="Streams in the decoding batch now (paused slow readers included).")
    max_batch_size: int = Field(description="MAX_BATCH_SIZE: streams decoded together at most.")
    batch_steps: int = Field(description="Batched decode steps since start.")
    live_by_family: dict[str, int] = Field(
        default_factory=dict,
        description="Sessions queued or generating now, by the API they came through (http, websocket, wyoming).",
    )


class Health(BaseModel):
    status: ServerStatus
    model: ModelInfo
    uptime_s: float
    requests: LoadInfo
    warning: str | None = Field(None, description="Set when the model makes noise rather than speech.")
    replica: str | None = Field(None, description="This replica, when the server runs as several (cluster/).")
    pid: int = Field(description="This server process.")


@router.get("/health", response_model=Health, summary="Liveness and load (always 200 while the process runs)")
async def health(state: StateDep) -> Health:
    engine = state.model.engine if state.model is not None else None
    loaded = engine.loaded if engine is not None else None
    dummy = bool(state.settings.DUMMY_MODEL)
    gate = state.gate
    return Health(
        status=state.status,
        model=ModelInfo(
            source=loaded.source if loaded else None,
            dummy=dummy,
            device=str(loaded.device) if loaded else None,
            load_seconds=round(loaded.load_seconds, 3) if loaded else None,
            gpt_precision=loaded.gpt_precision if loaded else None,
            gpt_precision_reason=loaded.gpt_precision_reason if loaded else None,
            cpu=loaded.cpu if loaded else None,
            gpt_kernels=loaded.gpt_kernels if loaded else None,
            gpt_kernels_reason=loaded.gpt_kernels_reason if loaded else None,
            vocoder_precision=loaded.vocoder_precision if loaded else None,
            vocoder_backend=loaded.vocoder_backend if loaded else None,
            vocoder_reason=loaded.vocoder_reason if loaded else None,
        ),
        uptime_s=round(time.time() - state.started_at, 3),
        requests=LoadInfo(
            in_flight=gate.in_flight,
            queued=gate.queued,
            capacity=gate.capacity,
            max_queue=gate.max_queue,
            model_jobs=engine.jobs_submitted if engine is not None else 0,
            decoding=engine.scheduler.running if engine is not None else 0,
            max_batch_size=engine.scheduler.limits.max_batch_size if engine is not None else 0,
            batch_steps=engine.scheduler.steps if engine is not None else 0,
            live_by_family=dict(Counter(stream.session.family for stream in state.sessions.live())),
        ),
        warning="DUMMY_MODEL is set: random weights, the audio is noise, not speech" if dummy else None,
        replica=state.peers.replica,
        pid=os.getpid(),
    )


@router.get(
    "/ready",
    summary="Readiness: 200 when requests can be served, 503 while loading or draining",
    responses={503: {"description": "Not ready."}},
)
async def ready(state: StateDep) -> JSONResponse:
    status = state.status
    answer: dict[str, object] = {"ready": status == "ready", "status": status}
    if state.peers.replica is not None:  # one replica of several: say which one answered
        answer["replica"] = state.peers.replica
    return JSONResponse(answer, status_code=200 if status == "ready" else 503)


@router.get("/languages", response_model=list[str], summary="Languages the model speaks")
async def languages(engine: EngineDep) -> list[str]:
    return engine.languages


@router.get("/available_speakers", response_model=list[str], summary="Built-in speakers of the checkpoint")
async def available_speakers(engine: EngineDep) -> list[str]:
    return sorted(engine.builtin_speakers)


@router.get(
    "/studio_speakers",
    summary="Built-in speakers with their latents (coqui xtts-streaming-server compatible)",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "Name -> gpt_cond_latent, speaker_embedding."}
    },
)
async def studio_speakers(model: ModelDep) -> Response:
    """Built-in speakers, then saved voices (what Pipecat's XTTSService picks its voice from)."""
    body = await studio_speakers_json(model.voices, model.studio_speakers_json)
    return Response(body, media_type="application/json")
