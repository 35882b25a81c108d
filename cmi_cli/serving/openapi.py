"""The service's OpenAPI schema, made to say what the server really does, and its docs page.

FastAPI derives most of the schema from the routes; what it cannot know is added here:

- the API-key security schemes are declared only when the server has a key (an open server
  that declared them would be promising a 401 it never sends);
- the file of ``/v1/segment`` must not be empty (``minLength: 1``); a batch holds 1 to
  ``max_batch_images`` files (an empty one among them gets its own 400 in the 200 answer);
- every operation documents the errors any request can meet before it reaches its route:
  408 (body too slow), 413 (body too large) and 422 (a repeated or conflicting query
  parameter, a bad field) where they apply, 503 where the service can be busy.

``/docs`` is Swagger UI with its script and stylesheet served by this server from the files of
the ``fastapi-offline`` package (Swagger UI's own dist files, MIT/Apache-2.0), so it works on a
machine with no internet access and under a strict Content-Security-Policy.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response

from cmi_cli.serving.errors import ClientError
from cmi_cli.serving.schemas import error_responses
from cmi_cli.serving.settings import ServeSettings

DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
_BODY_ROUTES = ("/v1/segment", "/v1/segment/batch")


def build_schema(app: FastAPI, settings: ServeSettings) -> dict[str, Any]:
    """Return the app's OpenAPI schema, adjusted to the server's settings (see module doc)."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    if settings.key is None:
        components.pop("securitySchemes", None)
    body_schemas = components.get("schemas", {})
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            if settings.key is None:
                operation.pop("security", None)
            if path.startswith("/v1/"):
                _add_errors(operation, 422)
            if path in _BODY_ROUTES:
                _add_errors(operation, 408, 413)
                _constrain_files(operation, body_schemas, settings)
    return schema


def _add_errors(operation: dict[str, Any], *statuses: int) -> None:
    responses = operation.setdefault("responses", {})
    for status, entry in error_responses(*statuses).items():
        if str(status) not in responses:
            responses[str(status)] = {
                "description": entry["description"],
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                },
            }


def _constrain_files(
    operation: dict[str, Any], body_schemas: dict[str, Any], settings: ServeSettings
) -> None:
    """An empty file is not a photo; a batch holds 1..max_batch_images files."""
    content = operation.get("requestBody", {}).get("content", {})
    ref = content.get("multipart/form-data", {}).get("schema", {}).get("$ref", "")
    body = body_schemas.get(ref.rsplit("/", 1)[-1], {})
    for prop in body.get("properties", {}).values():
        if prop.get("type") == "array":
            # An empty file inside a batch is that item's 400, inside a 200 answer.
            prop["minItems"], prop["maxItems"] = 1, settings.max_batch_images
        else:
            prop["minLength"] = 1


def install_docs(app: FastAPI, settings: ServeSettings) -> None:
    """Serve the honest schema at ``/openapi.json`` and Swagger UI from local files at /docs."""
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if "schema" not in cached:
            cached["schema"] = build_schema(app, settings)
        return cached["schema"]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/docs-assets/{name}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        if name not in DOCS_ASSETS:
            raise ClientError(404, "not_found", f"no docs asset {name!r}")
        try:
            package = resources.files("fastapi_offline")
        except ModuleNotFoundError:
            raise ClientError(
                404,
                "not_found",
                "Swagger UI's files are not installed (pip install fastapi-offline)",
            ) from None
        data = package.joinpath("static").joinpath(name).read_bytes()
        return Response(
            data, media_type=DOCS_ASSETS[name], headers={"Cache-Control": "max-age=86400"}
        )
