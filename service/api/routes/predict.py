"""Hosted inference: ``POST /v1/models/{model_id}/predict`` (multipart files or JSON base64).

The body is parsed by hand because one operation takes two media types; both
are documented in OpenAPI through ``openapi_extra`` so clients and schemathesis
see them.
"""

from __future__ import annotations

import base64
import binascii
import logging

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message

from service.api.deps import SettingsDep, TenantDep, read_in_session
from service.config import Settings
from service.errors import ProblemError, dotted, field_error, not_found, shown
from service.inference import ALLOWED_FORMATS, ArtifactError, InstanceError, ModelRef, Predictor
from service.repository import models as repo
from service.schemas import PredictOut
from service.ttl_cache import TtlCache

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/models", tags=["models"])

_EXAMPLE_PNG = (  # an 8x8 grey PNG; any size works, images are resized to the model's input
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAEElEQVR42mNsYIAAJgaKGAAmCACQtTEKkQAAAABJRU5ErkJggg=="
)


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    b64: str = Field(description="base64 of one image file (a `data:` URL prefix is accepted)")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    instances: list[Instance]


_FORMATS = ", ".join(ALLOWED_FORMATS)
_REQUEST_BODY = {
    "required": True,
    "description": f"one or more images ({_FORMATS}), as multipart files or base64 in JSON",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "additionalProperties": False,
                "properties": {
                    "files": {
                        "type": "array",
                        "minItems": 1,
                        "description": "one part per image",
                        "items": {"type": "string", "format": "binary"},
                    }
                },
            },
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["instances"],
                "additionalProperties": False,
                "properties": {
                    "instances": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["b64"],
                            "additionalProperties": False,
                            "properties": {
                                "b64": {
                                    "type": "string",
                                    "contentEncoding": "base64",
                                    "description": "base64 of one image file",
                                }
                            },
                        },
                    }
                },
            },
            "examples": {"one_image": {"summary": "one PNG", "value": {"instances": [{"b64": _EXAMPLE_PNG}]}}},
        },
    },
}


@router.post(
    "/{model_id}/predict",
    response_model=PredictOut,
    summary="Classify images with a trained model",
    description="Send `multipart/form-data` with one `files` part per image, or JSON "
    '`{"instances": [{"b64": "..."}]}`. Predictions come back in request order; instance '
    "numbers in errors are 0-based.",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        400: {"description": "a malformed multipart body"},
        404: {"description": "no such model for this tenant"},
        413: {"description": "request body larger than the server's upload limit"},
        415: {"description": "neither multipart/form-data nor application/json"},
        422: {
            "description": "malformed body, too many instances, or an undecodable image (the detail names the instance)"
        },
        503: {"description": "the stored model cannot be loaded"},
    },
)
async def predict(model_id: str, request: Request, tenant_id: TenantDep, settings: SettingsDep) -> PredictOut:
    # A registered model never changes, so its row is cached like an authenticated key (and a
    # deletion shows within the same seconds); a miss is one hop to the hot-read threads.
    refs: TtlCache[tuple[str, str], ModelRef] = request.app.state.model_refs
    model = await refs.resolve(
        (tenant_id, model_id),
        lambda: read_in_session(request, lambda session: _find_model(session, tenant_id=tenant_id, model_id=model_id)),
    )
    if model is None:
        raise not_found("model", model_id)
    images, names = await read_instances(request, settings=settings)
    predictor: Predictor = request.app.state.predictor
    try:
        predictions = await predictor.predict(model, images=images, names=names, max_pixels=settings.max_image_pixels)
    except InstanceError as exc:
        raise _instance_problem(exc, multipart=names[0] is not None) from exc
    except ArtifactError as exc:
        logger.error("model %s cannot be served: %s", model.id, exc)
        raise ProblemError(503, "Model Unavailable", f"model {model.id} cannot be loaded; retry later") from exc
    return PredictOut(model_id=model.id, predictions=predictions)


def _find_model(session: Session, *, tenant_id: str, model_id: str) -> ModelRef | None:
    row = repo.get_model(session, tenant_id=tenant_id, model_id=model_id)
    return None if row is None else ModelRef(id=row.id, blob_prefix=row.blob_prefix)


async def read_instances(request: Request, *, settings: Settings) -> tuple[list[bytes], list[str | None]]:
    """Image bytes and file names (None for JSON) from either body form; 4xx problems otherwise."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("multipart/form-data", "application/json"):
        raise ProblemError(
            415,
            "Unsupported Media Type",
            f"send multipart/form-data (files) or application/json (instances), not {shown(media_type or 'nothing')}",
        )
    body = await _read_body(request, max_bytes=settings.max_upload_bytes)
    limit = settings.max_predict_instances
    if media_type == "application/json":
        texts = _json_instances(body)
        _check_count(len(texts), limit=limit, what="instances")
        return [_b64decode(text, index=index) for index, text in enumerate(texts)], [None] * len(texts)
    return await _multipart_files(request, body, limit=limit)


async def _read_body(request: Request, *, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ProblemError(413, "Content Too Large", f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_instances(body: bytes) -> list[str]:
    try:
        parsed = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = [field_error(("body", *err["loc"]), err["msg"], err["type"]) for err in exc.errors()]
        detail = f"{dotted(errors[0]['loc'])}: {errors[0]['msg']}" if errors else "invalid body"
        raise ProblemError(422, "Validation failed", detail, errors=errors) from exc
    return [instance.b64 for instance in parsed.instances]


def _check_count(count: int, *, limit: int, what: str) -> None:
    if count == 0:
        raise ProblemError(
            422,
            "Validation failed",
            f"no {what}: send at least one image",
            errors=[field_error(("body", what), "at least one image is required")],
        )
    if count > limit:
        # 422, not 413: the body may be small; it is the number of images that is refused.
        raise ProblemError(
            422,
            "Too many instances",
            f"{count} {what} in one request; the limit is {limit} (max_predict_instances)",
            errors=[field_error(("body", what), f"at most {limit} images per request")],
        )


def _b64decode(text: str, *, index: int) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _instance_problem(InstanceError(index, f"invalid base64: {exc}"), multipart=False) from exc


async def _multipart_files(request: Request, body: bytes, *, limit: int) -> tuple[list[bytes], list[str | None]]:
    async def replay() -> Message:  # the body was read (and size-checked) already
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=limit + 1, max_fields=limit + 1, max_part_size=len(body) + 1
        )
    except HTTPException as exc:  # Starlette answers a malformed or over-full form with a 400
        if exc.detail.startswith("Too many"):  # files or plain fields beyond the instance limit
            raise ProblemError(422, "Too many instances", f"more than {limit} parts; the limit is {limit}") from exc
        raise ProblemError(400, "Bad Request", f"malformed multipart body: {exc.detail}") from exc
    return await _checked_form(form, limit=limit)


async def _checked_form(form: FormData, *, limit: int) -> tuple[list[bytes], list[str | None]]:
    try:
        return await _form_files(form.multi_items(), limit=limit)
    finally:
        await form.close()


async def _form_files(items: list, *, limit: int) -> tuple[list[bytes], list[str | None]]:
    unknown = sorted({key for key, _ in items if key != "files"})
    if unknown:
        raise ProblemError(
            422,
            "Validation failed",
            f"unknown form fields {', '.join(map(shown, unknown))}; send images as 'files' parts",
            errors=[field_error(("body", key), "unknown field") for key in unknown],
        )
    parts = [value for _, value in items]
    _check_count(len(parts), limit=limit, what="files")
    images, names = [], []
    for index, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            raise _instance_problem(
                InstanceError(index, "expected a file part (with a filename), got a plain field"), multipart=True
            )
        images.append(await part.read())
        names.append(shown(part.filename or "", limit=100))
    return images, names


def _instance_problem(exc: InstanceError, *, multipart: bool) -> ProblemError:
    loc = ("body", "files", exc.index) if multipart else ("body", "instances", exc.index, "b64")
    return ProblemError(422, "Undecodable image", str(exc), errors=[field_error(loc, exc.reason, "image")])
