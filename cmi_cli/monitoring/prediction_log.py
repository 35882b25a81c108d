"""Reading the prediction log that ``cmi serve`` writes (:mod:`cmi_cli.serving.store`).

Drift checks read it; it lives below serving so monitoring never imports the server.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

DB_NAME = "predictions.sqlite"
JSON_COLUMNS = ("image_features", "class_shares")


def read_predictions(
    log_dir: Path | str,
    window: int | None = None,
    since: dt.datetime | float | None = None,
) -> list[dict[str, Any]]:
    """Read prediction records from a local log folder, oldest first.

    Args:
        log_dir: The folder given to ``cmi serve --log-dir``.
        window: Only the last ``window`` records.
        since: Only records at or after this time (datetime, or seconds since the epoch).

    Returns:
        Dicts with ``id``, ``ts``, ``time`` (ISO 8601 UTC), ``model_id``, ``request_id``,
        ``latency_ms``, ``inference_ms``, ``width``, ``height``, ``mean_confidence``,
        ``p10_confidence``, ``mean_entropy``, ``image_features`` and ``class_shares`` (dicts).
        An empty list when the folder holds no log yet.
    """
    path = Path(log_dir) / DB_NAME
    if not path.is_file():
        return []
    if isinstance(since, dt.datetime):
        since = since.timestamp()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        sql, args = "SELECT * FROM predictions", []
        if since is not None:
            sql, args = sql + " WHERE ts >= ?", [float(since)]
        sql += " ORDER BY id DESC" + (" LIMIT ?" if window is not None else "")
        if window is not None:
            args.append(int(window))
        rows = conn.execute(sql, args).fetchall()
    finally:
        conn.close()
    out = []
    for row in reversed(rows):
        rec = dict(row)
        for col in JSON_COLUMNS:
            rec[col] = json.loads(rec[col])
        rec["time"] = dt.datetime.fromtimestamp(rec["ts"], dt.timezone.utc).isoformat()
        out.append(rec)
    return out


def gcs_client() -> Any:
    """Return a ``google.cloud.storage.Client`` (the [gcp] extra).

    With ``STORAGE_EMULATOR_HOST`` set the client talks to that emulator, anonymously.

    Raises:
        UsageError: If google-cloud-storage is not installed.
    """
    try:
        from google.cloud import storage
    except ImportError:
        from cmi_cli.errors import UsageError

        raise UsageError(
            "a gs:// prediction log needs google-cloud-storage",
            hint="pip install 'cmi-cli[gcp]', or use a local --log-dir",
        ) from None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


def read_gcs_predictions(
    url: str, client: Any = None, window: int | None = None
) -> list[dict[str, Any]]:
    """Read a ``gs://bucket/prefix`` prediction log, oldest first.

    With ``window``, only the newest ``window`` records are returned, and only the objects
    that can hold them are downloaded: each object's metadata gives its newest record's time
    (``last_ts``), so objects are fetched newest first until the records already in hand that
    are newer than every object left number ``window``. Several servers uploading side by side
    interleave in time; this still returns exactly the newest records.

    Args:
        url: The log's ``gs://bucket/prefix``.
        client: A ``google.cloud.storage.Client``; made with :func:`gcs_client` when None.
        window: How many of the newest records to return (all when None).

    Raises:
        ValueError: If a line is not a JSON object (its object and line are named).
    """
    bucket, _, prefix = url.removeprefix("gs://").partition("/")
    client = client or gcs_client()
    prefix = prefix.strip("/")
    blobs = [
        b
        for b in client.list_blobs(bucket, prefix=f"{prefix}/" if prefix else None)
        if b.name.endswith(".jsonl")
    ]
    # Objects without the metadata (written by hand, or by an older cmi) are read first.
    blobs.sort(key=_newest_ts, reverse=True)
    records: list[dict[str, Any]] = []
    for i, blob in enumerate(blobs):
        records.extend(_blob_records(bucket, blob))
        # Counting is only worth it once enough records are in hand.
        if window is not None and len(records) >= window and i + 1 < len(blobs):
            older = _newest_ts(blobs[i + 1])
            if sum(float(r.get("ts", 0)) > older for r in records) >= window:
                break
    records.sort(key=lambda r: float(r.get("ts", 0)))
    if window is None:
        return records
    return records[-window:] if window > 0 else []


def _newest_ts(blob: Any) -> float:
    """The time of an object's newest record, from its metadata (inf when unknown)."""
    try:
        return float((blob.metadata or {})["last_ts"])
    except (KeyError, TypeError, ValueError):
        return math.inf


def _blob_records(bucket: str, blob: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, line in enumerate(blob.download_as_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line) if line.lstrip().startswith("{") else None
        if not isinstance(record, dict):
            raise ValueError(f"gs://{bucket}/{blob.name} line {n} is not a JSON record")
        out.append(record)
    return out
