"""Dependencies shared by the routes: the running service and the API-key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cmi_cli.serving.errors import ClientError
from cmi_cli.serving.service import SegmentService
from cmi_cli.serving.settings import ServeSettings

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <key>")


def get_settings(request: Request) -> ServeSettings:
    """The app's settings."""
    return request.app.state.settings


def get_service(request: Request) -> SegmentService:
    """The running service; 503 while the model is still loading."""
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ClientError(503, "not_ready", "the model is loading", {"Retry-After": "1"})
    return service


def reject_repeated_query(request: Request) -> None:
    """Refuse (422) a query parameter given more than once, instead of silently using one."""
    seen: dict[str, int] = {}
    for name, _ in request.query_params.multi_items():
        seen[name] = seen.get(name, 0) + 1
    repeated = sorted(n for n, count in seen.items() if count > 1)
    if repeated:
        names = ", ".join(repeated)
        raise ClientError(
            422, "conflicting_query", f"query parameter given more than once: {names}"
        )


def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> None:
    """Refuse the request (401) unless it carries the configured key, if one is configured.

    Every key the request presents must be right: a wrong bearer token next to a right
    ``X-API-Key`` is refused, not quietly overlooked. The comparison takes the same time
    whatever the key's first wrong byte.
    """
    expected = request.app.state.api_key
    if expected is None:
        return
    given = [header_key] if header_key is not None else []
    authorization = request.headers.get("authorization")
    if authorization is not None:  # any other scheme than Bearer is a wrong key too
        given.append(bearer.credentials if bearer is not None else "")
    if not given or not all(hmac.compare_digest(k.encode(), expected.encode()) for k in given):
        raise ClientError(
            401,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
            {"WWW-Authenticate": "Bearer"},
        )


ServiceDep = Annotated[SegmentService, Depends(get_service)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
