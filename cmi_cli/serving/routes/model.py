"""``GET /v1/model``: what is being served."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from cmi_cli.serving.deps import ServiceDep, require_api_key
from cmi_cli.serving.paths import relative_paths
from cmi_cli.serving.schemas import ModelResponse, error_responses

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(require_api_key)])


@router.get("/model", response_model=ModelResponse, responses=error_responses(401, 503))
def model_info(service: ServiceDep) -> ModelResponse:
    """The model's id, classes and colours, input size, metrics and full lineage.

    Paths in the lineage are relative to the served model's folder.
    """
    info = dict(service.model.info())
    info["lineage"] = relative_paths(info["lineage"], service.model.path.resolve().parent)
    return ModelResponse.model_validate(info)
