"""Long-form jobs: submit a text or a book, watch its progress, fetch the audio (with Range), cancel it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.deps import CallerDep, JobsDep
from api.errors import OPENAI_ERROR_RESPONSES, OpenAIErrorBody
from models.jobs import JobChapter, JobForm, JobOut, JobRequest
from services.errors import InvalidInput, UnsupportedMediaType
from services.formats import MEDIA_TYPES
from services.jobs.assembly import JOB_FORMATS
from services.jobs.documents import Document, document_from_text, read_document
from services.jobs.service import JobProgress
from services.speech import SpeechOptions

# Under /v1, errors come in OpenAI's shape (api/errors.py), as for every /v1 route.
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=OPENAI_ERROR_RESPONSES)

_MEDIA_TYPES = {name: MEDIA_TYPES.get(name, "audio/mp4") for name in JOB_FORMATS}  # m4b: AAC in MP4
_OPTION_NAMES = tuple(name for name in SpeechOptions.__dataclass_fields__ if name in JobRequest.model_fields)
_UPLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "A .txt, .md or .epub file."},
        **{name: {"type": "string"} for name in JobRequest.model_fields if name != "text"},
    },
    "required": ["file", "voice"],
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobRequest.model_json_schema()},
            "multipart/form-data": {"schema": _UPLOAD_SCHEMA},
        },
    }
}


def job_out(job: JobProgress) -> JobOut:
    record, request = job.record, job.record.request
    result = record.result or {}
    marks = result.get("chapters", [])
    chapters = []
    for number, title in enumerate(record.chapters, start=1):
        mark = marks[number - 1] if number <= len(marks) else {}
        chapter_file = mark.get("file")
        chapters.append(
            JobChapter(
                index=number,
                title=title,
                start_s=mark.get("start_s"),
                end_s=mark.get("end_s"),
                audio_url=f"/v1/jobs/{record.id}/audio?chapter={number}" if chapter_file else None,
            )
        )
    return JobOut(
        id=record.id,
        status=record.status,
        progress=job.progress,
        sentences_done=record.sentences_done,
        sentences_total=record.sentences_total,
        audio_seconds=round(job.audio_seconds, 3),
        eta_seconds=round(job.eta_s, 1) if job.eta_s is not None else None,
        error=record.error,
        voice=request["voice"],
        language=request["language"],
        format=request["format"],
        title=request.get("title") or "",
        preview=request.get("preview", ""),
        seed=request["seed"],
        created_at=record.created,
        started_at=record.started,
        finished_at=record.finished,
        audio_url=f"/v1/jobs/{record.id}/audio" if result else None,
        audio_bytes=result.get("bytes"),
        duration_s=result.get("duration_s"),
        chapters=chapters,
    )


async def job_request(request: Request, max_chars: int) -> tuple[JobRequest, Document]:
    """The body as JSON, or as a multipart form with the text in `file`; 415 for anything else."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = JobRequest.model_validate_json(await request.body())
        except ValidationError as error:
            raise RequestValidationError(_located(error)) from None
        if body.text is None:
            raise InvalidInput("send `text`, or a .txt, .md or .epub file as multipart field `file`")
        return body, document_from_text(body.text, body.title)
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        fields = {name: value for name, value in form.items() if name != "file" and isinstance(value, str)}
        try:
            body = JobForm.model_validate(fields)
        except ValidationError as error:
            raise RequestValidationError(_located(error)) from None
        if isinstance(upload, UploadFile):
            data = await upload.read()
            document = read_document(data, upload.filename or "", max_chars=max_chars)
            if body.title:
                document = Document(body.title, document.chapters)
            return body, document
        if body.text is not None:
            return body, document_from_text(body.text, body.title)
        raise InvalidInput("send a .txt, .md or .epub file as multipart field `file`, or a `text` field")
    raise UnsupportedMediaType(
        f"send application/json or multipart/form-data, not {content_type or 'no content type'}",
        content_type=content_type,
    )


def _located(error: ValidationError) -> list[Any]:
    return [{**problem, "loc": ("body", *problem["loc"])} for problem in error.errors(include_url=False)]


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Narrate a long text or a book in the background",
    responses={
        415: {"model": OpenAIErrorBody, "description": "Neither JSON nor multipart, or a file not .txt, .md or .epub."}
    },
    openapi_extra=_BODY,
)
async def submit_job(request: Request, jobs: JobsDep, caller: CallerDep) -> JSONResponse:
    body, document = await job_request(request, jobs.limits.max_chars)
    options = SpeechOptions(**{name: getattr(body, name) for name in _OPTION_NAMES})
    record = await jobs.submit(document, body.voice, body.language, options, body.format, caller.key_id)
    out = job_out(jobs.progress(record))
    return JSONResponse(out.model_dump(), status_code=202, headers={"Location": f"/v1/jobs/{record.id}"})


@router.get("", response_model=list[JobOut], summary="Your jobs, oldest first (an admin key sees everyone's)")
async def list_jobs(jobs: JobsDep, caller: CallerDep) -> list[JobOut]:
    return [job_out(job) for job in await jobs.jobs(caller.key_id, caller.admin)]


@router.get("/{job_id}", response_model=JobOut, summary="A job's status, progress and ETA")
async def get_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> JobOut:
    return job_out(await jobs.get(job_id, caller.key_id, caller.admin))


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    summary="Cancel a job and delete its audio (an ended job's record goes too)",
)
async def delete_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> JobOut:
    return job_out(await jobs.delete(job_id, caller.key_id, caller.admin))


@router.get(
    "/{job_id}/audio",
    response_class=FileResponse,
    responses={200: {"content": {media_type: {} for media_type in _MEDIA_TYPES.values()}}, 206: {}},
    summary="The finished audio (HTTP Range supported); `chapter` for one chapter's own file",
)
async def job_audio(
    job_id: str,
    jobs: JobsDep,
    caller: CallerDep,
    chapter: Annotated[int | None, Query(ge=1, le=100_000, description="1-based chapter number.")] = None,
) -> FileResponse:
    path = await jobs.audio(job_id, caller.key_id, caller.admin, chapter)
    output_format = path.suffix.lstrip(".")
    return FileResponse(path, media_type=_MEDIA_TYPES.get(output_format), filename=path.name)
