"""Drift inside ``cmi serve``: a background refresher, Prometheus gauges and a log line.

Every ``interval_s`` seconds a task compares the last ``window`` records of the prediction log
with the model's reference in a worker thread (never on the path of ``/v1/segment``), then
sets ``cmi_drift_share`` (NaN until there are enough records), ``cmi_drift_detected``,
``cmi_drift_threshold``, ``cmi_drift_samples``, ``cmi_drift_last_refresh_timestamp_seconds``
and ``cmi_feature_drift{feature}``, and writes one JSON line to stdout
(``{"event": "cmi_drift", "drift_share": ...}``) from which Cloud Logging builds a log-based
metric. ``GET /v1/drift`` answers from the same object.

Settings (``CMI_*`` variables, or ``ServeSettings`` fields of the same names):
``CMI_REFERENCE`` (default: the model's saved reference), ``CMI_DRIFT_WINDOW`` (500),
``CMI_DRIFT_INTERVAL_S`` (300; 0 turns the refresher off), ``CMI_DRIFT_THRESHOLD`` (0.2),
``CMI_DRIFT_MIN_SAMPLES`` (30), ``CMI_DRIFT_MAX_CONCURRENCY`` (1), ``CMI_DRIFT_CACHE_S`` (60).

A report takes seconds, so requests never compute one on the event loop: each window's report
is computed once in a daemon thread (concurrent requests for the same window wait for that one
computation), reused for ``cache_s`` seconds, and at most ``max_concurrency`` windows are
computed at once; beyond that :class:`DriftBusyError` asks the client to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cmi_cli.errors import CmiError
from cmi_cli.monitoring.drift import DEFAULT_MIN_SAMPLES, DEFAULT_THRESHOLD, DriftResult
from cmi_cli.monitoring.model_reference import reference_path_for
from cmi_cli.monitoring.reference import FeatureTable, load_table
from cmi_cli.utils.relpaths import relative_name

log = logging.getLogger("cmi_cli.serving")

DEFAULT_WINDOW = 500
DEFAULT_INTERVAL_S = 300.0
LOG_EVENT = "cmi_drift"


class DriftBusyError(Exception):
    """Every drift slot is computing another window; retry later."""


class DriftMonitor:
    """Drift of the served traffic against the reference, kept fresh in the background.

    Args:
        reference: The model's reference features.
        log_dir: The local prediction log folder.
        registry: Prometheus registry for the gauges (None: no gauges).
        window: Records compared per refresh.
        interval_s: Seconds between refreshes.
        threshold: Share of drifted features above which the traffic drifts.
        min_samples: Fewest records for a check.
        model_id: The served model, for the log line.
        max_concurrency: Reports computed at once.
        cache_s: Seconds a report is reused for its window.
    """

    def __init__(
        self,
        reference: FeatureTable,
        log_dir: Path | str,
        registry: Any = None,
        window: int = DEFAULT_WINDOW,
        interval_s: float = DEFAULT_INTERVAL_S,
        threshold: float = DEFAULT_THRESHOLD,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        model_id: str = "",
        max_concurrency: int = 1,
        cache_s: float = 60.0,
    ) -> None:
        # A gs:// log stays a URL (Path would fold its '//').
        self.reference = reference
        self.log_dir: Path | str = log_dir if str(log_dir).startswith("gs://") else Path(log_dir)
        self.max_concurrency, self.cache_s = max_concurrency, cache_s
        self._cache: dict[tuple[str, int], tuple[float, DriftResult]] = {}
        self._running: dict[tuple[str, int], asyncio.Future[DriftResult]] = {}
        self.window, self.interval_s = window, interval_s
        self.threshold, self.min_samples, self.model_id = threshold, min_samples, model_id
        self.latest: DriftResult | None = None
        self.latest_at = 0.0
        self.status = "waiting for the first refresh"
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._gauges = _make_gauges(registry, threshold) if registry is not None else None
        self._computations = _make_counter(registry) if registry is not None else None

    def compute(self, window: int | None = None) -> DriftResult:
        """Compare the last ``window`` log records with the reference (blocking; thread-safe).

        Raises:
            DataError: If the log has fewer than ``min_samples`` records or is malformed.
        """
        from cmi_cli.monitoring.drift import run_drift
        from cmi_cli.monitoring.prediction_log import read_predictions
        from cmi_cli.monitoring.reference import table_from_log

        if self._computations is not None:
            self._computations.inc()
        if isinstance(self.log_dir, str):
            from cmi_cli.monitoring.prediction_log import read_gcs_predictions

            # The served gs:// log (Cloud Run): its newest records, uploaded in batches.
            records = read_gcs_predictions(self.log_dir, window=window or self.window)
        else:
            records = read_predictions(self.log_dir, window=window or self.window)
        current = table_from_log(
            records, self.reference.share_classes, source=f"last {len(records)} requests"
        )
        with self._lock:
            return run_drift(self.reference, current, self.threshold, self.min_samples)

    async def report(self, window: int | None = None, fresh_s: float | None = None) -> DriftResult:
        """The report of the last ``window`` requests: cached, shared, or computed now.

        A report younger than ``fresh_s`` (default: ``cache_s``, or the refresher's interval
        when that is shorter) is reused; a computation of
        the same window already running is awaited instead of started again; otherwise one
        starts in a daemon thread (it never holds up the server's exit) when a slot is free.

        Raises:
            DriftBusyError: If ``max_concurrency`` other windows are being computed.
            DataError: If the log has too few records (see :meth:`compute`).
        """
        key = (self.model_id, window or self.window)
        max_age = self.cache_s if fresh_s is None else fresh_s
        if fresh_s is None and self.interval_s > 0:  # never older than the refresher's period
            max_age = min(max_age, self.interval_s)
        cached = self._cache.get(key)
        if cached is not None and time.time() - cached[0] <= max_age:
            return cached[1]
        future = self._running.get(key)
        if future is None:
            if len(self._running) >= self.max_concurrency:
                raise DriftBusyError
            future = self._start(key)
        return await asyncio.shield(future)

    def _start(self, key: tuple[str, int]) -> asyncio.Future[DriftResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[DriftResult] = loop.create_future()
        self._running[key] = future

        def settle(result: DriftResult | None, error: BaseException | None) -> None:
            self._running.pop(key, None)
            if error is not None:
                future.set_exception(error)
            else:
                assert result is not None
                self._cache[key] = (time.time(), result)
                future.set_result(result)

        def work() -> None:
            try:
                result = self.compute(key[1])
            except BaseException as exc:  # handed to every waiting request
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        # A daemon thread: a report still computing when the server stops is simply dropped.
        threading.Thread(target=work, name="cmi-drift-report", daemon=True).start()
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        return future

    def refresh(self) -> DriftResult | None:
        """Recompute with the default window now (blocking); update gauges and the log line."""
        try:
            result = self.compute()
        except Exception as exc:
            self._failed(exc)
            return None
        return self._record(result)

    async def refresh_shared(self) -> DriftResult | None:
        """Like :meth:`refresh`, through :meth:`report` (skipped when every slot is busy)."""
        try:
            result = await self.report(fresh_s=0)
        except DriftBusyError:
            return None
        except Exception as exc:
            self._failed(exc)
            return None
        return self._record(result)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, CmiError):
            self.status = exc.message
        else:  # the refresher must outlive a bad record or a library error
            log.error("drift refresh failed", exc_info=exc)
            self.status = "the last refresh failed (see the server log)"

    def _record(self, result: DriftResult) -> DriftResult:
        self.latest, self.latest_at, self.status = result, time.time(), "ok"
        self._publish(result)
        return result

    def result(self, window: int | None = None, max_age_s: float | None = None) -> DriftResult:
        """The latest result when fresh enough and of the same window, else a new one (blocking)."""
        max_age = self.interval_s if max_age_s is None else max_age_s
        fresh = self.latest is not None and time.time() - self.latest_at <= max_age
        if fresh and window in (None, self.window):
            return self.latest  # type: ignore[return-value]
        return self.compute(window)

    def _publish(self, result: DriftResult) -> None:
        if self._gauges is not None:
            share, detected, samples, stamp, per_feature = self._gauges
            share.set(result.share)
            detected.set(1 if result.drifted else 0)
            samples.set(result.n_current)
            stamp.set(self.latest_at)
            for f in result.features:
                per_feature.labels(f.feature).set(1 if f.drifted else 0)
        line = {
            "event": LOG_EVENT,
            "severity": "WARNING" if result.drifted else "INFO",
            "message": f"drift share {result.share:.3f} over {result.n_current} requests",
            "drift_share": round(result.share, 6),
            "drifted": result.drifted,
            "threshold": result.threshold,
            "n_current": result.n_current,
            "drifted_features": result.drifted_features,
            "model_id": self.model_id,
        }
        # Cloud Run turns a JSON line on stdout into a structured entry (jsonPayload).
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    async def run(self) -> None:
        """Refresh forever, every ``interval_s`` seconds, in a worker thread."""
        while True:
            await self.refresh_shared()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        """Start the background task (on the running event loop) unless the interval is 0."""
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="cmi-drift")

    async def stop(self) -> None:
        """Cancel the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _make_gauges(registry: Any, threshold: float) -> tuple[Any, Any, Any, Any, Any]:
    from prometheus_client import Gauge

    kw: dict[str, Any] = {"registry": registry, "multiprocess_mode": "max"}
    share = Gauge("cmi_drift_share", "Share of drifted features in the last window.", **kw)
    share.set(math.nan)
    limit = Gauge("cmi_drift_threshold", "Drift share above which traffic drifts.", **kw)
    limit.set(threshold)
    return (
        share,
        Gauge("cmi_drift_detected", "1 when the drift share exceeds the threshold.", **kw),
        Gauge("cmi_drift_samples", "Requests in the last drift window.", **kw),
        Gauge("cmi_drift_last_refresh_timestamp_seconds", "When drift was last computed.", **kw),
        Gauge("cmi_feature_drift", "1 when a feature drifted.", ["feature"], **kw),
    )


def _make_counter(registry: Any) -> Any:
    from prometheus_client import Counter

    return Counter(
        "cmi_drift_computations",
        "Drift reports computed (cached ones excluded).",
        registry=registry,
    )


def _setting(settings: Any, name: str, default: Any, cast: Any) -> Any:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(f"CMI_{name.upper()}")
    return default if value in (None, "") else cast(value)


def monitor_from_settings(
    settings: Any,
    registry: Any = None,
    model_id: str = "",
    lineage: dict[str, Any] | None = None,
) -> tuple[DriftMonitor | None, str]:
    """Build the service's monitor from its settings, or say why there is none.

    Args:
        settings: ``ServeSettings`` (or anything with its field names).
        registry: Prometheus registry for the gauges.
        model_id: The served model, for the log line.
        lineage: The served model's lineage (names the reference of an ONNX model).

    Returns:
        ``(monitor, "")``, or ``(None, reason)`` when Evidently is not installed, the log is
        off or remote, or the model has no reference.
    """
    import importlib.util

    if importlib.util.find_spec("evidently") is None:
        # The slim serve image leaves Evidently out: drift runs as 'cmi drift-check' instead.
        return None, (
            "drift monitoring needs Evidently (pip install 'evidently>=0.7,<0.8' 'pandas<3'); "
            "run 'cmi drift-check' on the prediction log instead"
        )
    if not getattr(settings, "log_predictions", True):
        return None, "drift monitoring needs the prediction log (it is off: --no-log)"
    log_dir = str(getattr(settings, "log_dir", "predictions"))
    ref_setting = _setting(settings, "reference", None, Path)
    try:
        path = ref_setting or reference_path_for(Path(settings.model), lineage)
        reference = load_table(path)
    except CmiError as exc:
        return None, f"drift monitoring is off: {exc.message}"
    # Clients see the reference by its name beside the model, not the server's absolute path.
    folder = Path(settings.model).resolve().parent
    shown = relative_name(str(Path(path).resolve()), folder)
    custom = ref_setting is not None
    reference = dataclasses.replace(
        reference, source=_describe_reference(shown, len(reference), lineage, custom)
    )
    monitor = DriftMonitor(
        reference,
        log_dir if log_dir.startswith("gs://") else Path(log_dir),
        registry,
        window=_setting(settings, "drift_window", DEFAULT_WINDOW, int),
        interval_s=_setting(settings, "drift_interval_s", DEFAULT_INTERVAL_S, float),
        threshold=_setting(settings, "drift_threshold", DEFAULT_THRESHOLD, float),
        min_samples=_setting(settings, "drift_min_samples", DEFAULT_MIN_SAMPLES, int),
        model_id=model_id,
        max_concurrency=_setting(settings, "drift_max_concurrency", 1, int),
        cache_s=_setting(settings, "drift_cache_s", 60.0, float),
    )
    return monitor, ""


def _describe_reference(name: str, rows: int, lineage: dict[str, Any] | None, custom: bool) -> str:
    """Say which reference the service compares with: its file and the data it came from."""
    if custom or not lineage:
        return f"{name} ({rows} photos, given with --reference)" if custom else name
    data = lineage.get("data") or {}
    split = data.get("reference_split") or data.get("val_split")
    md5 = str(data.get("dvc_md5") or "")[:12] or "n/a"
    return f"{name} ({rows} photos of the {split!r} split of data {md5}, saved at training)"
