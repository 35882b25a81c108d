"""Prometheus metrics of one app, in a registry of its own (so tests can build many apps).

With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set), every process writes its
samples to files there and ``/metrics`` aggregates them with a ``MultiProcessCollector``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BYTES_BUCKETS = tuple(float(4**i * 1024) for i in range(1, 10))  # 4 KiB .. 256 MiB
PIXEL_BUCKETS = tuple(float(4**i * 1000) for i in range(2, 11))  # 16 kpx .. 1 Gpx
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


class ServeMetrics:
    """The service's metrics (prefix ``cmi_``)."""

    def __init__(self) -> None:
        # The *_created series double the output and no dashboard here uses them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cmi_http_requests", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.request_latency = Histogram(
            "cmi_http_request_duration_seconds", "HTTP request latency by route.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "cmi_http_requests_in_flight", "HTTP requests being served.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.inference_latency = Histogram(
            "cmi_inference_duration_seconds", "Model inference time per call.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upload_bytes = Histogram(
            "cmi_upload_bytes", "Size of uploaded images in bytes.",
            buckets=BYTES_BUCKETS, registry=r,
        )  # fmt: skip
        self.image_pixels = Histogram(
            "cmi_image_pixels", "Pixels of decoded images.", buckets=PIXEL_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "cmi_inference_batch_size", "Images per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.predicted_pixels = Counter(
            "cmi_predicted_pixels", "Predicted pixels by class, at the model's resolution.",
            ["class_id", "class_name"], registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "cmi_overload_rejections", "Requests answered 503 because the queue was full.",
            registry=r,
        )  # fmt: skip
        self.log_errors = Counter(
            "cmi_prediction_log_errors", "Prediction records that could not be written.",
            registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "cmi_model_info", "The served model (always 1; its identity is in the labels).",
            ["model_id", "model_name", "backend", "sha256"], registry=r,
            multiprocess_mode="max",
        )  # fmt: skip

        self.model_ready = Gauge(
            "cmi_model_ready", "1 once the model is loaded and warmed up.",
            registry=r, multiprocess_mode="min",
        )  # fmt: skip
        self.model_ready.set(0)

    def set_model(self, model_id: str, name: str, backend: str, sha256: str) -> None:
        """Publish the served model's identity."""
        self.model_info.labels(model_id, name, backend, sha256).set(1)

    def exposition(self) -> tuple[bytes, str]:
        """Return the text format and its content type (aggregated across processes)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware that counts requests by route template and times them.

    The route template (``/v1/segment``) rather than the raw path keeps label cardinality
    bounded; unmatched paths count as ``unmatched``.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServeMetrics,
        resolve_route: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app, self.metrics, self.resolve_route = app, metrics, resolve_route

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Serve one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            label = getattr(scope.get("route"), "path", None)
            if label is None and self.resolve_route is not None:
                # Requests refused before routing (413 on Content-Length) still name a route.
                label = self.resolve_route(scope)
            label = label or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(label, method, str(status["code"])).inc()
            self.metrics.request_latency.labels(label, method).observe(time.perf_counter() - start)
