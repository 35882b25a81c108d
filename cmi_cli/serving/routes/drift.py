"""``GET /v1/drift``: the served traffic compared with the model's reference."""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from cmi_cli.errors import CmiError
from cmi_cli.monitoring.drift_service import DriftBusyError
from cmi_cli.serving.deps import require_api_key
from cmi_cli.serving.errors import ClientError
from cmi_cli.serving.schemas import error_responses

router = APIRouter(prefix="/v1", tags=["monitoring"], dependencies=[Depends(require_api_key)])


class DriftFormat(str, Enum):
    """What ``GET /v1/drift`` answers with."""

    json = "json"
    html = "html"


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The JSON summary: share of drifted features, threshold, and per feature "
        "the test, score and verdict; with ?format=html Evidently's report.",
        "content": {"text/html": {"schema": {"type": "string"}}},
    },
    **error_responses(401, 404, 409, 422, 503),
}


@router.get("/drift", responses=_RESPONSES, summary="Drift of recent requests")
async def drift(
    request: Request,
    format: Annotated[DriftFormat, Query(description="json (summary) or html (report).")] = (
        DriftFormat.json
    ),
    window: Annotated[
        int | None, Query(ge=2, le=1_000_000, description="Compare the last N requests.")
    ] = None,
) -> Any:
    """Compare the last N logged requests with the reference the model was trained with.

    Reports are cached per window for a while (``CMI_DRIFT_CACHE_S``) and computed off the
    request path; simultaneous requests for one window share one computation, and when every
    drift slot is busy with other windows the answer is 503 with ``Retry-After``.
    """
    monitor = getattr(request.app.state, "drift", None)
    if monitor is None:
        reason = getattr(request.app.state, "drift_reason", "") or "drift monitoring is off"
        raise ClientError(404, "drift_unavailable", reason)
    try:
        result = await monitor.report(window)
    except DriftBusyError:
        retry = str(max(1, request.app.state.settings.retry_after_s))
        raise ClientError(
            503,
            "drift_busy",
            "drift reports for other windows are being computed; retry shortly",
            {"Retry-After": retry},
        ) from None
    except CmiError as exc:
        raise ClientError(409, "insufficient_data", exc.message) from None
    if format is DriftFormat.html:
        html = await asyncio.to_thread(result.snapshot.get_html_str, as_iframe=False)
        return HTMLResponse(html)
    return result.to_dict()
