"""``GET /``: the web page, served from the package with no external resource."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from cmi_cli.serving.errors import ClientError

router = APIRouter(include_in_schema=False)

# Everything the page loads comes from this server; inline scripts and styles are refused.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_MEDIA_TYPES = {
    "app.js": "text/javascript",
    "nutrition.js": "text/javascript",
    "style.css": "text/css",
}


def _read(name: str) -> bytes:
    return resources.files("cmi_cli.serving").joinpath("static").joinpath(name).read_bytes()


@router.get("/")
def index() -> HTMLResponse:
    """The upload page."""
    return HTMLResponse(_read("index.html"), headers={"Content-Security-Policy": CSP})


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The page's script and stylesheet (a fixed list: no path from the client reaches disk)."""
    if name not in _MEDIA_TYPES:
        raise ClientError(404, "not_found", f"no static file {name!r}")
    return Response(
        _read(name), media_type=_MEDIA_TYPES[name], headers={"Cache-Control": "no-cache"}
    )
