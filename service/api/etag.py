"""Conditional GET: an ``ETag`` on a JSON body and ``304 Not Modified`` when the client already has it.

The tag is a digest of the exact body, so it changes exactly when what the
client would read changes, whatever column moved.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Header, Response
from pydantic import BaseModel

IfNoneMatch = Annotated[
    str | None,
    Header(max_length=2000, description="an ETag from an earlier answer: 304 and no body while it still holds"),
]
NOT_MODIFIED = {304: {"description": "unchanged since the ETag sent in `If-None-Match`"}}


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison: ``*`` or any listed tag, with or without ``W/``."""
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def json_or_not_modified(model: BaseModel, if_none_match: str | None) -> Response:
    body = model.model_dump_json().encode("utf-8")
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type="application/json", headers=headers)
