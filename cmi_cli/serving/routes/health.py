"""Health, readiness and metrics: open even when an API key is configured."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cmi_cli.serving.errors import ClientError
from cmi_cli.serving.schemas import HealthResponse, ReadyResponse, error_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse)
def healthz() -> HealthResponse:
    """The process is alive."""
    return HealthResponse()


@router.get("/readyz", response_model=ReadyResponse, responses=error_responses(503))
def readyz(request: Request) -> ReadyResponse:
    """The model is loaded and warmed up (503 until then)."""
    service = getattr(request.app.state, "service", None)
    if service is None or not service.ready.is_set():
        retry = str(max(1, request.app.state.settings.retry_after_s))
        raise ClientError(
            503, "not_ready", "the model is loading or warming up", {"Retry-After": retry}
        )
    return ReadyResponse(model_id=service.model.id)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format.", "content": {"text/plain": {}}}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)
