"""The FastAPI application factory.

``create_app(settings)`` builds an app that loads its model at start-up (lifespan), warms it
up in the background (``/readyz`` turns 200 then) and serves the API, the page and
``/metrics``. ``create_app_from_env`` is the factory ASGI servers call in worker processes
(``uvicorn --factory cmi_cli.serving.app:create_app_from_env`` with ``CMI_*`` variables).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match

from cmi_cli import __version__
from cmi_cli.monitoring.drift_service import DriftMonitor, monitor_from_settings
from cmi_cli.serving.errors import install_error_handlers
from cmi_cli.serving.images import set_pixel_limit
from cmi_cli.serving.limits import BodyLimitMiddleware
from cmi_cli.serving.metrics import MetricsMiddleware, ServeMetrics
from cmi_cli.serving.nutrition import load_table
from cmi_cli.serving.predictor import ServedModel
from cmi_cli.serving.routes import drift, health, model, page, segment
from cmi_cli.serving.service import SegmentService
from cmi_cli.serving.settings import ServeSettings, load_settings
from cmi_cli.serving.store import PredictionLog, open_prediction_log

log = logging.getLogger("cmi_cli.serving")
ROUTERS = (segment.router, model.router, drift.router, health.router, page.router)

DESCRIPTION = """Semantic segmentation of food photos (cmi-cli).

Upload a JPEG, PNG or WebP photo to `POST /v1/segment`. When the server has an API key,
every `/v1` route needs it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
Errors are `{"error": {"code": ..., "message": ...}}`.
"""


def create_app(settings: ServeSettings, served: ServedModel | None = None) -> FastAPI:
    """Build the service.

    Args:
        settings: Server settings (model path, limits, concurrency, log folder...).
        served: An already loaded model (tests); loaded from ``settings.model`` when None.

    Returns:
        The FastAPI application; the model loads when its lifespan starts.
    """
    metrics = ServeMetrics()
    set_pixel_limit(settings.max_pixels)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await asyncio.to_thread(_start_service, settings, metrics, served)
        app.state.service = service
        service.start_warmup()
        log.info("serving %s (%s backend)", service.model.id, service.model.backend_name)
        monitor = await _start_drift(app, settings, metrics, service.model)
        try:
            yield
        finally:
            if monitor is not None:
                await monitor.stop()
            app.state.service = None
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="cmi serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics, app.state.service = settings, metrics, None
    app.state.drift, app.state.drift_reason = None, "drift monitoring is starting"
    app.state.api_key = settings.key
    app.state.nutrition_table = load_table(settings)  # a bad table stops start-up
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    routes = [r for router in ROUTERS for r in router.routes]
    app.add_middleware(MetricsMiddleware, metrics=metrics, resolve_route=_route_resolver(routes))
    return app


def create_app_from_env() -> FastAPI:
    """Build the app from ``CMI_*`` environment variables (for ASGI servers' ``--factory``)."""
    return create_app(load_settings())


async def _start_drift(
    app: FastAPI, settings: ServeSettings, metrics: ServeMetrics, model: ServedModel
) -> DriftMonitor | None:
    """Start the background drift refresher, or record why there is none (GET /v1/drift)."""
    monitor, reason = await asyncio.to_thread(
        monitor_from_settings, settings, metrics.registry, model.id, model.lineage
    )
    app.state.drift, app.state.drift_reason = monitor, reason
    if monitor is None:
        log.info("%s", reason)
    else:
        monitor.start()
    return monitor


def _start_service(
    settings: ServeSettings, metrics: ServeMetrics, served: ServedModel | None
) -> SegmentService:
    model = served or ServedModel.load(
        settings.model, settings.resolved_backend, settings.session_threads
    )
    prediction_log: PredictionLog | None = None
    if settings.log_predictions:
        prediction_log = open_prediction_log(settings.log_dir, on_error=metrics.log_errors.inc)
    return SegmentService(model, settings, metrics, prediction_log)


def _route_resolver(routes: list[Any]) -> Any:
    """Name the route of a request the app never routed (refused by a middleware)."""

    def resolve(scope: MutableMapping[str, Any]) -> str | None:
        for route in routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", None)
        return None

    return resolve
