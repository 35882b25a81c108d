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
``CMI_DRIFT_MIN_SAMPLES`` (30).
"""

from __future__ import annotations

import asyncio
import contextlib
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

log = logging.getLogger("cmi_cli.serving")

DEFAULT_WINDOW = 500
DEFAULT_INTERVAL_S = 300.0
LOG_EVENT = "cmi_drift"


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
    """

    def __init__(
        self,
        reference: FeatureTable,
        log_dir: Path,
        registry: Any = None,
        window: int = DEFAULT_WINDOW,
        interval_s: float = DEFAULT_INTERVAL_S,
        threshold: float = DEFAULT_THRESHOLD,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        model_id: str = "",
    ) -> None:
        self.reference, self.log_dir = reference, Path(log_dir)
        self.window, self.interval_s = window, interval_s
        self.threshold, self.min_samples, self.model_id = threshold, min_samples, model_id
        self.latest: DriftResult | None = None
        self.latest_at = 0.0
        self.status = "waiting for the first refresh"
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._gauges = _make_gauges(registry, threshold) if registry is not None else None

    def compute(self, window: int | None = None) -> DriftResult:
        """Compare the last ``window`` log records with the reference (blocking; thread-safe).

        Raises:
            DataError: If the log has fewer than ``min_samples`` records or is malformed.
        """
        from cmi_cli.monitoring.drift import run_drift
        from cmi_cli.monitoring.prediction_log import read_predictions
        from cmi_cli.monitoring.reference import table_from_log

        records = read_predictions(self.log_dir, window=window or self.window)
        current = table_from_log(
            records, self.reference.share_classes, source=f"last {len(records)} requests"
        )
        with self._lock:
            return run_drift(self.reference, current, self.threshold, self.min_samples)

    def refresh(self) -> DriftResult | None:
        """Recompute with the default window; update the gauges and write the log line."""
        try:
            result = self.compute()
        except CmiError as exc:
            self.status = exc.message
            return None
        except Exception:  # the refresher must outlive a bad record or a library error
            log.exception("drift refresh failed")
            self.status = "the last refresh failed (see the server log)"
            return None
        self.latest, self.latest_at, self.status = result, time.time(), "ok"
        self._publish(result)
        return result

    def result(self, window: int | None = None, max_age_s: float | None = None) -> DriftResult:
        """The latest result when fresh enough and of the same window, else a new one."""
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
            await asyncio.to_thread(self.refresh)
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
    if log_dir.startswith("gs://"):
        return (
            None,
            "drift monitoring reads a local prediction log; run 'cmi drift-check' on the gs:// log",
        )
    ref_setting = _setting(settings, "reference", None, Path)
    try:
        path = ref_setting or reference_path_for(Path(settings.model), lineage)
        reference = load_table(path)
    except CmiError as exc:
        return None, f"drift monitoring is off: {exc.message}"
    monitor = DriftMonitor(
        reference,
        Path(log_dir),
        registry,
        window=_setting(settings, "drift_window", DEFAULT_WINDOW, int),
        interval_s=_setting(settings, "drift_interval_s", DEFAULT_INTERVAL_S, float),
        threshold=_setting(settings, "drift_threshold", DEFAULT_THRESHOLD, float),
        min_samples=_setting(settings, "drift_min_samples", DEFAULT_MIN_SAMPLES, int),
        model_id=model_id,
    )
    return monitor, ""
