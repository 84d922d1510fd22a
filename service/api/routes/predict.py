"""Hosted inference: ``POST /v1/models/{model_id}/predict`` and ``/v1/models/by-alias/{alias}/predict``.

The body (multipart files or JSON base64, see ``service.api.instances``) is
parsed by hand because one operation takes two media types; both are
documented in OpenAPI through ``openapi_extra`` so clients and schemathesis see them.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from rarefit.schemas import PredictOut
from service.api.deps import SettingsDep, TenantDep, read_in_session
from service.api.instances import instance_problem, read_instances
from service.config import Settings
from service.errors import ProblemError, field_error, not_found
from service.inference import ALLOWED_FORMATS, ArtifactError, DecisionError, InstanceError, ModelRef, Predictor
from service.models import Model
from service.repository import models as repo
from service.repository import registry
from service.ttl_cache import TtlCache

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/models", tags=["models"])

_EXAMPLE_PNG = (  # an 8x8 grey PNG; any size works, images are resized to the model's input
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAEElEQVR42mNsYIAAJgaKGAAmCACQtTEKkQAAAABJRU5ErkJggg=="
)


_FORMATS = ", ".join(ALLOWED_FORMATS)
_THRESHOLD = {
    "type": "number",
    "minimum": 0,
    "maximum": 1,
    "description": "binary models only: decide with this threshold on the positive class instead of the card's",
}
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
                    },
                    "threshold": _THRESHOLD,
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
                    },
                    # JSON null means "no override", as leaving the field out does.
                    "threshold": {**_THRESHOLD, "type": ["number", "null"]},
                },
            },
            "examples": {"one_image": {"summary": "one PNG", "value": {"instances": [{"b64": _EXAMPLE_PNG}]}}},
        },
    },
}


_RESPONSES: dict[int | str, dict] = {
    400: {"description": "a malformed multipart body"},
    404: {"description": "no such model (or alias) for this tenant"},
    413: {"description": "request body larger than the server's upload limit"},
    415: {"description": "neither multipart/form-data nor application/json"},
    422: {
        "description": "malformed body, too many instances, an undecodable image (the detail names the instance), "
        "or a threshold override the model cannot take"
    },
    503: {"description": "the stored model cannot be loaded"},
}


@router.post(
    "/{model_id}/predict",
    response_model=PredictOut,
    summary="Classify images with a trained model",
    description="Send `multipart/form-data` with one `files` part per image, or JSON "
    '`{"instances": [{"b64": "..."}]}`. Predictions come back in request order; instance '
    "numbers in errors are 0-based.",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=_RESPONSES,
)
async def predict(model_id: str, request: Request, tenant_id: TenantDep, settings: SettingsDep) -> PredictOut:
    # A model's row changes only by a re-fit or a delete, which forget it in this process; it is cached
    # like an authenticated key, so other API processes see the change within the same seconds.
    # A miss is one hop to the hot-read threads.
    refs: TtlCache[tuple[str, str], ModelRef] = request.app.state.model_refs
    model = await refs.resolve(
        (tenant_id, model_id),
        lambda: read_in_session(request, lambda session: _find_model(session, tenant_id=tenant_id, model_id=model_id)),
    )
    if model is None:
        raise not_found("model", model_id)
    return await _serve(model, request=request, settings=settings)


@router.post(
    "/by-alias/{alias}/predict",
    response_model=PredictOut,
    summary="Classify images with the model an alias names",
    description="The same request and answer as `POST /v1/models/{model_id}/predict`; `model_id` in the answer "
    "says which model the alias named at that moment.",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=_RESPONSES,
)
async def predict_by_alias(alias: str, request: Request, tenant_id: TenantDep, settings: SettingsDep) -> PredictOut:
    model = await read_in_session(request, lambda session: _find_alias(session, tenant_id=tenant_id, alias=alias))
    if model is None:
        raise not_found("alias", alias)
    return await _serve(model, request=request, settings=settings)


async def _serve(model: ModelRef, *, request: Request, settings: Settings) -> PredictOut:
    body = await read_instances(request, settings=settings)
    predictor: Predictor = request.app.state.predictor
    try:
        predictions = await predictor.predict(
            model, images=body.images, names=body.names, max_pixels=settings.max_image_pixels, threshold=body.threshold
        )
    except DecisionError as exc:
        problem = str(exc)
        raise ProblemError(
            422, "Validation failed", problem, errors=[field_error(("body", "threshold"), problem)]
        ) from exc
    except InstanceError as exc:
        raise instance_problem(exc, multipart=body.multipart) from exc
    except ArtifactError as exc:
        logger.error("model %s cannot be served: %s", model.id, exc)
        raise ProblemError(503, "Model Unavailable", f"model {model.id} cannot be loaded; retry later") from exc
    return PredictOut(model_id=model.id, predictions=predictions)


def _ref(row: Model | None) -> ModelRef | None:
    return None if row is None else ModelRef(id=row.id, blob_prefix=row.blob_prefix, revision=row.revision or 0)


def _find_model(session: Session, *, tenant_id: str, model_id: str) -> ModelRef | None:
    return _ref(repo.get_model(session, tenant_id=tenant_id, model_id=model_id))


def _find_alias(session: Session, *, tenant_id: str, alias: str) -> ModelRef | None:
    row = registry.get_alias(session, tenant_id=tenant_id, alias=alias)
    return None if row is None else _find_model(session, tenant_id=tenant_id, model_id=row.model_id)
