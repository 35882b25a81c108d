"""What happens to an uploaded image: decode, preprocess, infer, post-process, log.

The work runs in a thread pool off the event loop. A :class:`ConcurrencyGate` admits at most
``concurrency`` images at once plus ``max_queue`` waiting; beyond that the request is refused
with 503 and ``Retry-After`` at once instead of joining an unbounded queue.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from cmi_cli.monitoring.features import FEATURE_SIDE, image_features
from cmi_cli.serving.batching import MicroBatcher
from cmi_cli.serving.errors import ClientError
from cmi_cli.serving.images import decode_photo, encode_jpeg, encode_png
from cmi_cli.serving.metrics import ServeMetrics
from cmi_cli.serving.predictor import ClassShare, Segmentation, ServedModel
from cmi_cli.serving.settings import ServeSettings
from cmi_cli.serving.store import PredictionLog

log = logging.getLogger("cmi_cli.serving")
T = TypeVar("T")


class ConcurrencyGate:
    """Bound the images in progress and the requests waiting for a turn.

    Args:
        limit: Images processed at once.
        max_queue: Requests allowed to wait beyond ``limit``.
        retry_after_s: ``Retry-After`` of the 503 answer.
        on_reject: Called on each refusal (metrics).
    """

    def __init__(
        self,
        limit: int,
        max_queue: int,
        retry_after_s: int,
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        self.limit, self.capacity = limit, limit + max_queue
        self.retry_after_s, self._on_reject = retry_after_s, on_reject
        self.admitted = 0
        self._sem = asyncio.Semaphore(limit)

    async def run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        """Run ``fn`` in ``executor`` when a slot is free; 503 when too many wait already."""
        if self.admitted >= self.capacity:
            if self._on_reject is not None:
                self._on_reject()
            raise ClientError(
                503,
                "overloaded",
                "the server is at capacity; retry shortly",
                {"Retry-After": str(self.retry_after_s)},
            )
        self.admitted += 1
        try:
            await self._sem.acquire()
        except BaseException:
            self.admitted -= 1
            raise
        future = asyncio.get_running_loop().run_in_executor(executor, fn)

        def release(_: object) -> None:
            # The slot frees when the thread finishes, even if the client has gone away.
            self._sem.release()
            self.admitted -= 1

        future.add_done_callback(release)
        return await asyncio.shield(future)


@dataclass(frozen=True)
class Photo:
    """A decoded upload: pixels (maybe decoded at reduced scale) and the photo's full size."""

    rgb: np.ndarray
    width: int
    height: int


@dataclass
class ImageResult:
    """One processed image, with what the response needs."""

    request_id: str
    filename: str | None
    width: int
    height: int
    inference_ms: float
    latency_ms: float
    segmentation: Segmentation
    body: bytes | None = None
    overlay_jpeg: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[ClassShare]:
        """Classes found, largest first."""
        return self.segmentation.classes

    def to_json(self, model_id: str) -> dict[str, Any]:
        """The JSON body of ``POST /v1/segment``."""
        overlay = base64.b64encode(self.overlay_jpeg).decode() if self.overlay_jpeg else None
        return {
            "request_id": self.request_id,
            "model_id": model_id,
            "image": {"width": self.width, "height": self.height},
            "inference_ms": round(self.inference_ms, 3),
            "latency_ms": round(self.latency_ms, 3),
            "mean_confidence": self.segmentation.summary["mean_confidence"],
            "classes": [
                {"id": c.id, "name": c.name, "share": c.share, "confidence": c.confidence}
                for c in self.classes
            ],
            "overlay_jpeg_base64": overlay,
        }


class SegmentService:
    """The model, its worker threads, the gate, the batcher and the prediction log."""

    def __init__(
        self,
        model: ServedModel,
        settings: ServeSettings,
        metrics: ServeMetrics,
        prediction_log: PredictionLog | None,
    ) -> None:
        self.model, self.settings, self.metrics = model, settings, metrics
        self.prediction_log = prediction_log
        self.executor = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="cmi-infer")
        self.gate = ConcurrencyGate(
            settings.concurrency, settings.max_queue, settings.retry_after_s, metrics.rejected.inc
        )
        self.batcher: MicroBatcher | None = None
        if settings.batch_size > 1:
            self.batcher = MicroBatcher(
                self._infer_batch, settings.batch_size, settings.batch_wait_ms / 1000
            )
        self.ready = threading.Event()
        metrics.set_model(model.id, model.name, model.backend_name, model.sha256)

    def start_warmup(self) -> None:
        """Warm the model up in the background; ``ready`` is set when it is done."""

        def warm() -> None:
            try:
                self.model.warmup(self.settings.warmup_runs)
            except Exception:  # a model that cannot run stays not-ready, and says why
                log.exception("warm-up of %s failed", self.model.id)
                return
            self.ready.set()
            self.metrics.model_ready.set(1)

        threading.Thread(target=warm, name="cmi-warmup", daemon=True).start()

    def close(self) -> None:
        """Stop the batcher and the threads, then flush the prediction log."""
        if self.batcher is not None:
            self.batcher.close()
        self.executor.shutdown(wait=True)
        if self.prediction_log is not None:
            self.prediction_log.close()

    async def segment(self, data: bytes, filename: str | None, output: str, overlay: bool) -> Any:
        """Process one upload off the event loop (see :meth:`process_one`)."""
        return await self.gate.run(
            self.executor, lambda: self.process_one(data, filename, output, overlay)
        )

    async def segment_many(self, uploads: list[tuple[str | None, bytes]]) -> Any:
        """Process several uploads with one model call (see :meth:`process_many`)."""
        return await self.gate.run(self.executor, lambda: self.process_many(uploads))

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        logits, ms = self.model.infer(batch)
        self.metrics.inference_latency.observe(ms / 1000)
        self.metrics.batch_size.observe(len(batch))
        return logits

    def _decode(self, data: bytes, full: bool = False) -> Photo:
        """Decode an upload; at reduced scale unless ``full`` (the overlay needs every pixel)."""
        self.metrics.upload_bytes.observe(len(data))
        min_side = None if full else max(self.model.image_size, FEATURE_SIDE)
        rgb, size = decode_photo(data, self.settings.max_pixels, min_side)
        self.metrics.image_pixels.observe(size[0] * size[1])
        return Photo(rgb, *size)

    def process_one(
        self, data: bytes, filename: str | None, output: str = "json", overlay: bool = False
    ) -> ImageResult:
        """Segment one upload; ``output`` is ``json``, ``mask`` (PNG) or ``overlay`` (JPEG).

        Raises:
            ClientError: If the upload is not an acceptable image.
        """
        start = time.perf_counter()
        photo = self._decode(data, full=output == "overlay" or overlay)
        x = self.model.preprocess(photo.rgb)
        t0 = time.perf_counter()
        if self.batcher is not None:
            logits = self.batcher.submit(x)
        else:
            logits = self._infer_batch(x[None])[0]
        inference_ms = (time.perf_counter() - t0) * 1000
        return self._finish(photo, logits, inference_ms, start, filename, output, overlay)

    def process_many(
        self, uploads: list[tuple[str | None, bytes]]
    ) -> list[ImageResult | ClientError]:
        """Segment several uploads; a bad one gets its error, the others their results."""
        start = time.perf_counter()
        decoded: list[Photo | ClientError] = []
        for _, data in uploads:
            try:
                decoded.append(self._decode(data))
            except ClientError as exc:
                decoded.append(exc)
        good = [i for i, d in enumerate(decoded) if isinstance(d, Photo)]
        logits: dict[int, np.ndarray] = {}
        inference_ms = 0.0
        if good:
            batch = np.stack([self.model.preprocess(decoded[i].rgb) for i in good])  # type: ignore[union-attr]
            t0 = time.perf_counter()
            out = self._infer_batch(batch)
            inference_ms = (time.perf_counter() - t0) * 1000 / len(good)
            logits = {i: out[k] for k, i in enumerate(good)}
        results: list[ImageResult | ClientError] = []
        for i, item in enumerate(decoded):
            if isinstance(item, ClientError):
                results.append(item)
            else:
                name = uploads[i][0]
                results.append(self._finish(item, logits[i], inference_ms, start, name))
        return results

    def _finish(
        self,
        photo: Photo,
        logits: np.ndarray,
        inference_ms: float,
        start: float,
        filename: str | None,
        output: str = "json",
        overlay: bool = False,
    ) -> ImageResult:
        seg = self.model.postprocess(logits)
        width, height = photo.width, photo.height
        result = ImageResult(uuid.uuid4().hex, filename, width, height, inference_ms, 0.0, seg)
        if output == "mask":
            # Logits upsampled to the photo's size before the argmax: no blocky edges.
            result.body = encode_png(self.model.segment_full(logits, width, height)[0])
        elif output == "overlay" or overlay:
            rows, cols = photo.rgb.shape[:2]
            full, _ = self.model.segment_full(logits, cols, rows)
            jpeg = encode_jpeg(self.model.overlay(photo.rgb, full))
            if output == "overlay":
                result.body = jpeg
            else:
                result.overlay_jpeg = jpeg
        for c in seg.classes:
            self.metrics.predicted_pixels.labels(str(c.id), c.name).inc(c.pixels)
        result.latency_ms = (time.perf_counter() - start) * 1000
        features = image_features(photo.rgb)
        # Features are scale-free; the size is the photo's, not the decoded array's.
        features.update(width=width, height=height, aspect=width / height)
        self._log(result, features)
        return result

    def _log(self, result: ImageResult, features: dict[str, float]) -> None:
        if self.prediction_log is None:
            return
        summary = result.segmentation.summary
        self.prediction_log.append(
            {
                "ts": time.time(),
                "model_id": self.model.id,
                "request_id": result.request_id,
                "latency_ms": result.latency_ms,
                "inference_ms": result.inference_ms,
                "width": result.width,
                "height": result.height,
                "mean_confidence": summary["mean_confidence"],
                "p10_confidence": summary["p10_confidence"],
                "mean_entropy": summary["mean_entropy"],
                "image_features": features,
                "class_shares": summary["class_shares"],
            }
        )
