"""The body of a predict request: images as multipart ``files`` or JSON base64 ``instances``, and an
optional per-request ``threshold`` (binary models: on the positive class, instead of the card's).

Parsed by hand because one operation takes two media types; every problem is a
4xx naming the part or instance.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message

from service.config import Settings
from service.errors import ProblemError, dotted, field_error, shown
from service.inference import InstanceError


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    b64: str = Field(description="base64 of one image file (a `data:` URL prefix is accepted)")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    instances: list[Instance]
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, strict=True, description="binary models: use this threshold instead"
    )


@dataclass(frozen=True)
class Instances:
    """Image bytes in request order, their file names (``None`` for JSON) and the threshold override."""

    images: list[bytes]
    names: list[str | None]
    threshold: float | None = None

    @property
    def multipart(self) -> bool:
        return self.names[0] is not None


async def read_instances(request: Request, *, settings: Settings) -> Instances:
    """The images, names and threshold override from either body form; 4xx problems otherwise."""
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
        parsed = _json_body(body)
        texts = [instance.b64 for instance in parsed.instances]
        _check_count(len(texts), limit=limit, what="instances")
        images = [_b64decode(text, index=index) for index, text in enumerate(texts)]
        return Instances(images, [None] * len(texts), parsed.threshold)
    return await _multipart_files(request, body, limit=limit)


async def _read_body(request: Request, *, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ProblemError(413, "Content Too Large", f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_body(body: bytes) -> PredictRequest:
    try:
        parsed = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = [field_error(("body", *err["loc"]), err["msg"], err["type"]) for err in exc.errors()]
        detail = f"{dotted(errors[0]['loc'])}: {errors[0]['msg']}" if errors else "invalid body"
        raise ProblemError(422, "Validation failed", detail, errors=errors) from exc
    return parsed


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
        raise instance_problem(InstanceError(index, f"invalid base64: {exc}"), multipart=False) from exc


async def _multipart_files(request: Request, body: bytes, *, limit: int) -> Instances:
    async def replay() -> Message:  # the body was read (and size-checked) already
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=limit + 1, max_fields=limit + 2, max_part_size=len(body) + 1
        )
    except HTTPException as exc:  # Starlette answers a malformed or over-full form with a 400
        if exc.detail.startswith("Too many"):  # files or plain fields beyond the instance limit
            raise ProblemError(422, "Too many instances", f"more than {limit} parts; the limit is {limit}") from exc
        raise ProblemError(400, "Bad Request", f"malformed multipart body: {exc.detail}") from exc
    return await _checked_form(form, limit=limit)


async def _checked_form(form: FormData, *, limit: int) -> Instances:
    try:
        return await _form_files(form.multi_items(), limit=limit)
    finally:
        await form.close()


async def _form_files(items: list, *, limit: int) -> Instances:
    threshold = _form_threshold([value for key, value in items if key == "threshold"])
    items = [(key, value) for key, value in items if key != "threshold"]
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
            raise instance_problem(
                InstanceError(index, "expected a file part (with a filename), got a plain field"), multipart=True
            )
        images.append(await part.read())
        names.append(shown(part.filename or "", limit=100))
    return Instances(images, names, threshold)


def _form_threshold(values: list) -> float | None:
    if not values:
        return None
    problem = None
    if len(values) > 1 or not isinstance(values[0], str):
        problem = "send one plain 'threshold' field"
    else:
        try:
            threshold = float(values[0])
        except ValueError:
            threshold = math.nan
        if not 0.0 <= threshold <= 1.0:  # NaN fails too
            problem = f"threshold must be a number in [0, 1], got {shown(values[0])}"
    if problem is not None:
        raise ProblemError(422, "Validation failed", problem, errors=[field_error(("body", "threshold"), problem)])
    return threshold


def instance_problem(exc: InstanceError, *, multipart: bool) -> ProblemError:
    loc = ("body", "files", exc.index) if multipart else ("body", "instances", exc.index, "b64")
    return ProblemError(422, "Undecodable image", str(exc), errors=[field_error(loc, exc.reason, "image")])
