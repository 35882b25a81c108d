"""The prediction log: one record per served image, for drift checks and audits.

Requests hand records to a queue; one writer thread drains it into a sink, so concurrent
requests never interleave writes. The local sink is SQLite in WAL mode (several worker
processes may share the file: each has its own connection, and SQLite serialises commits);
a ``gs://bucket/prefix`` folder buffers records and uploads rotated JSON-lines files.

The log is bounded (:class:`Retention`): records older than ``CMI_LOG_MAX_AGE_DAYS`` (default
30) and all but the newest ``CMI_LOG_MAX_RECORDS`` (default 100000) are deleted as new ones
are written; 0 turns a bound off. On GCS whole files are deleted, by their age and by the
record counts kept in their metadata.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# The log's file and JSON columns are shared with its reader (monitoring reads, serving writes).
from cmi_cli.monitoring.prediction_log import (  # noqa: F401
    DB_NAME,
    gcs_client,
    read_gcs_predictions,
    read_predictions,
)
from cmi_cli.monitoring.prediction_log import JSON_COLUMNS as _JSON_COLUMNS

log = logging.getLogger("cmi_cli.serving")

_STOP = object()
_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    model_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    inference_ms REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mean_confidence REAL NOT NULL,
    p10_confidence REAL NOT NULL,
    mean_entropy REAL NOT NULL,
    image_features TEXT NOT NULL,
    class_shares TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
"""
_COLUMNS = (
    "ts", "model_id", "request_id", "latency_ms", "inference_ms", "width", "height",
    "mean_confidence", "p10_confidence", "mean_entropy",
)  # fmt: skip


@dataclass(frozen=True)
class Retention:
    """How much of the prediction log to keep (0: no bound of that kind).

    Attributes:
        max_age_days: Delete records older than this.
        max_records: Keep at most this many records (the newest).
        every_s: Enforce the bounds at most this often.
    """

    max_age_days: float = 30.0
    max_records: int = 100_000
    every_s: float = 60.0

    @classmethod
    def from_env(cls) -> Retention:
        """Read ``CMI_LOG_MAX_AGE_DAYS`` and ``CMI_LOG_MAX_RECORDS`` (defaults otherwise).

        Raises:
            UsageError: If a value is not a number >= 0.
        """
        age = _env_number("CMI_LOG_MAX_AGE_DAYS", cls.max_age_days)
        records = _env_number("CMI_LOG_MAX_RECORDS", cls.max_records)
        return cls(max_age_days=age, max_records=int(records))

    def cutoff(self, now: float | None = None) -> float | None:
        """The oldest timestamp to keep, or None without an age bound."""
        if self.max_age_days <= 0:
            return None
        return (time.time() if now is None else now) - self.max_age_days * 86400


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        from cmi_cli.errors import UsageError

        raise UsageError(f"{name}={text!r} is not a number >= 0", hint="0 turns the bound off")
    return value


class Sink(Protocol):
    """Where records end up."""

    def write(self, records: list[dict[str, Any]]) -> None:
        """Persist a batch of records (all or none)."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


class SqliteSink:
    """Records as rows of ``predictions.sqlite`` in a folder, pruned to ``retention``."""

    def __init__(self, folder: Path, retention: Retention | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DB_NAME
        self._conn = _connect(self.path)
        self.retention = retention or Retention()
        self._pruned = 0.0
        with self._conn:
            self._conn.executescript(_SCHEMA)
        self.prune()

    def prune(self, now: float | None = None) -> int:
        """Delete the records outside the retention bounds; return how many."""
        cutoff, keep = self.retention.cutoff(now), self.retention.max_records
        deleted = 0
        with self._conn:
            if cutoff is not None:
                deleted += self._conn.execute(
                    "DELETE FROM predictions WHERE ts < ?", (cutoff,)
                ).rowcount
            if keep > 0:
                deleted += self._conn.execute(
                    "DELETE FROM predictions WHERE id <= (SELECT id FROM predictions "
                    "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (keep,),
                ).rowcount
        self._pruned = time.monotonic()
        return deleted

    def write(self, records: list[dict[str, Any]]) -> None:
        """Insert the records in one transaction."""
        rows = [
            tuple(r[c] for c in _COLUMNS) + tuple(json.dumps(r[c]) for c in _JSON_COLUMNS)
            for r in records
        ]
        names = ", ".join(_COLUMNS + _JSON_COLUMNS)
        marks = ", ".join("?" * (len(_COLUMNS) + len(_JSON_COLUMNS)))
        with self._conn:
            self._conn.executemany(f"INSERT INTO predictions ({names}) VALUES ({marks})", rows)
        if time.monotonic() - self._pruned >= self.retention.every_s:
            self.prune()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class GcsJsonlSink:
    """Records buffered and uploaded as ``PREFIX/predictions-<time>-<pid>-<n>-<rand>.jsonl``.

    Args:
        url: ``gs://bucket/prefix``.
        client: A ``google.cloud.storage.Client`` (or anything with ``bucket(name).blob(path)
            .upload_from_string(data, content_type=...)``); created when None.
        rotate_records: Upload once this many records are buffered.
        rotate_seconds: Upload buffered records at least this often (checked on writes).
        retention: Bounds applied after each upload (whole files are deleted).
    """

    def __init__(
        self,
        url: str,
        client: Any = None,
        rotate_records: int = 1000,
        rotate_seconds: float = 300.0,
        retention: Retention | None = None,
    ) -> None:
        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        if not bucket:
            raise ValueError(f"not a gs://bucket/prefix URL: {url!r}")
        client = client or gcs_client()
        self._url = url
        self.retention = retention or Retention()
        self._bucket = client.bucket(bucket)
        self._prefix = prefix.strip("/")
        self._rotate_records, self._rotate_seconds = rotate_records, rotate_seconds
        self._buffer: list[dict[str, Any]] = []
        self._opened = time.monotonic()
        self._count = 0

    def write(self, records: list[dict[str, Any]]) -> None:
        """Buffer records; upload full files, and the rest when the buffer is old."""
        self._buffer.extend(records)
        while len(self._buffer) >= self._rotate_records:
            self._upload(self._buffer[: self._rotate_records])
            del self._buffer[: self._rotate_records]
        if self._buffer and time.monotonic() - self._opened >= self._rotate_seconds:
            self.flush()

    def flush(self) -> None:
        """Upload the buffered records as one object."""
        if self._buffer:
            self._upload(self._buffer)
            self._buffer = []

    def _upload(self, records: list[dict[str, Any]]) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        # Every Cloud Run instance may be pid 1: the random part keeps their names apart.
        token = secrets.token_hex(3)
        name = f"predictions-{stamp}-{os.getpid()}-{self._count:05d}-{token}.jsonl"
        path = f"{self._prefix}/{name}" if self._prefix else name
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        blob = self._bucket.blob(path)
        newest = max((float(r.get("ts") or 0) for r in records), default=0.0)
        # Readers of a window fetch only the objects that can hold it, by this newest time.
        blob.metadata = {"records": str(len(records)), "last_ts": repr(newest)}
        blob.upload_from_string(data, content_type="application/x-ndjson")
        self._count, self._opened = self._count + 1, time.monotonic()
        try:
            self.prune()
        except Exception as exc:  # the records are safe; a failed clean-up is retried next upload
            log.warning("could not prune the prediction log at %s: %s", self._url, exc)

    def prune(self, now: float | None = None) -> list[str]:
        """Delete log files wholly outside the retention bounds; return their names."""
        cutoff, keep = self.retention.cutoff(now), self.retention.max_records
        if cutoff is None and keep <= 0:
            return []
        prefix = f"{self._prefix}/predictions-" if self._prefix else "predictions-"
        blobs = sorted(self._bucket.list_blobs(prefix=prefix), key=lambda b: b.name, reverse=True)
        kept, doomed = 0, []
        for blob in blobs:  # newest first: the names start with the upload time
            meta = blob.metadata or {}
            last = float(meta.get("last_ts") or 0) or blob.time_created.timestamp()
            if (cutoff is not None and last < cutoff) or (keep > 0 and kept >= keep):
                doomed.append(blob)
            kept += int(meta.get("records") or 0)
        for blob in doomed:
            blob.delete()
        return [b.name for b in doomed]

    def close(self) -> None:
        """Upload what is left."""
        self.flush()


class PredictionLog:
    """A queue in front of a sink, drained by one writer thread.

    Args:
        sink: Where records go.
        on_error: Called with the number of records a failed write lost.
    """

    def __init__(self, sink: Sink, on_error: Callable[[int], None] | None = None) -> None:
        self.sink, self._on_error = sink, on_error
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="cmi-prediction-log", daemon=True)
        self._thread.start()

    def append(self, record: dict[str, Any]) -> None:
        """Queue one record (never blocks the request)."""
        self._queue.put(record)

    def flush(self) -> None:
        """Wait until every queued record is written."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued, then stop the writer and close the sink."""
        self._queue.put(_STOP)
        self._thread.join(timeout=60)
        self.sink.close()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            batch, stop = [], first is _STOP
            if not stop:
                batch.append(first)
            while not stop and len(batch) < 256:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                self._write(batch)  # type: ignore[arg-type]
            for _ in range(len(batch) + (1 if stop else 0)):
                self._queue.task_done()
            if stop:
                return

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.sink.write(batch)
        except Exception:  # a full disk must not take the service down; it is counted
            log.exception("could not write %d prediction records", len(batch))
            if self._on_error is not None:
                self._on_error(len(batch))


def open_prediction_log(
    log_dir: str,
    on_error: Callable[[int], None] | None = None,
    gcs_client: Any = None,
    retention: Retention | None = None,
) -> PredictionLog:
    """Open the log at a folder or a ``gs://bucket/prefix``, bounded by ``retention``.

    ``retention`` defaults to :meth:`Retention.from_env`.
    """
    sink: Sink
    bounds = retention or Retention.from_env()
    if log_dir.startswith("gs://"):
        sink = GcsJsonlSink(log_dir, client=gcs_client, retention=bounds)
    else:
        sink = SqliteSink(Path(log_dir), retention=bounds)
    return PredictionLog(sink, on_error)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
