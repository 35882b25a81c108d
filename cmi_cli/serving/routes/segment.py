"""``POST /v1/segment`` and ``POST /v1/segment/batch``."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response

from cmi_cli.serving.deps import ServiceDep, SettingsDep, require_api_key
from cmi_cli.serving.errors import ClientError
from cmi_cli.serving.nutrition import NutritionQuery, PlateQuery, nutrition_json
from cmi_cli.serving.schemas import BatchResponse, SegmentResponse, error_responses
from cmi_cli.serving.service import ImageResult

router = APIRouter(prefix="/v1", tags=["segment"], dependencies=[Depends(require_api_key)])


class OutputKind(str, Enum):
    """What ``POST /v1/segment`` answers with."""

    json = "json"
    mask = "mask"
    overlay = "overlay"


_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON; with ?output=mask a PNG of class ids (one byte per pixel, the "
        "photo's size); with ?output=overlay a JPEG of the photo with the coloured mask.",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **error_responses(400, 401, 413, 415, 422, 503),
}


@router.post(
    "/segment",
    response_model=SegmentResponse,
    responses=_IMAGE_RESPONSES,
    summary="Segment one photo",
)
async def segment(
    service: ServiceDep,
    response: Response,
    request: Request,
    file: Annotated[UploadFile, File(description="A JPEG, PNG or WebP photo.")],
    output: Annotated[OutputKind, Query(description="json, mask (PNG) or overlay (JPEG).")] = (
        OutputKind.json
    ),
    overlay: Annotated[
        bool, Query(description="With JSON output, add the overlay as base64 JPEG.")
    ] = False,
    nutrition: NutritionQuery = False,
    plate_diameter_cm: PlateQuery = None,
) -> Any:
    """Segment a photo: classes present with their share of pixels and confidence."""
    data = await file.read()
    result: ImageResult = await service.segment(data, file.filename, output.value, overlay)
    headers = {
        "X-Request-ID": result.request_id,
        "X-Model-ID": service.model.id,
        "X-Inference-Ms": f"{result.inference_ms:.3f}",
    }
    if output is OutputKind.mask:
        return Response(result.body, media_type="image/png", headers=headers)
    if output is OutputKind.overlay:
        return Response(result.body, media_type="image/jpeg", headers=headers)
    response.headers.update(headers)
    body = result.to_json(service.model.id)
    if nutrition:
        body["nutrition"] = nutrition_json(request, service.model, result, plate_diameter_cm)
    return SegmentResponse.model_validate(body)


@router.post(
    "/segment/batch",
    response_model=BatchResponse,
    responses=error_responses(401, 413, 422, 503),
    summary="Segment several photos in one request",
)
async def segment_batch(
    service: ServiceDep,
    settings: SettingsDep,
    request: Request,
    files: Annotated[list[UploadFile], File(description="JPEG, PNG or WebP photos.")],
    nutrition: NutritionQuery = False,
    plate_diameter_cm: PlateQuery = None,
) -> BatchResponse:
    """Segment several photos with one model call; each gets its result or its error."""
    if len(files) > settings.max_batch_images:
        raise ClientError(
            422,
            "too_many_files",
            f"{len(files)} files sent; at most {settings.max_batch_images} per batch",
        )
    uploads = [(f.filename, await f.read()) for f in files]
    outcomes = await service.segment_many(uploads)
    items = []
    for (name, _), outcome in zip(uploads, outcomes, strict=False):
        if isinstance(outcome, ClientError):
            items.append(
                {"filename": name, "status": outcome.status, "error": outcome.body()["error"]}
            )
        else:
            body = outcome.to_json(service.model.id)
            if nutrition:
                body["nutrition"] = nutrition_json(
                    request, service.model, outcome, plate_diameter_cm
                )
            items.append({"filename": name, "status": 200, "result": body})
    return BatchResponse.model_validate(
        {"model_id": service.model.id, "count": len(items), "results": items}
    )
