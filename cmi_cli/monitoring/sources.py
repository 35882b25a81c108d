"""Where ``cmi drift-check`` finds its two tables, and the check itself.

``--reference`` is a feature CSV, a model (checkpoint, run folder or ONNX: its saved
reference), or a dataset folder (image features computed now). ``--current`` is a feature CSV,
a prediction log (the folder or ``gs://bucket/prefix`` given to ``cmi serve --log-dir``, or
JSON-lines files downloaded from one), a dataset folder, or the URL of a running server
(whose ``/v1/drift`` answer is used as is).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmi_cli.errors import DataError, UsageError
from cmi_cli.monitoring.drift import (
    DEFAULT_MIN_SAMPLES,
    DEFAULT_THRESHOLD,
    DriftResult,
    run_drift,
    save_report,
)
from cmi_cli.monitoring.model_reference import load_predictor, reference_path_for
from cmi_cli.monitoring.reference import (
    REFERENCE_NAME,
    FeatureTable,
    compute_features,
    load_table,
    table_from_log,
)

MODEL_SUFFIXES = {".ckpt", ".onnx", ".pt", ".pth"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class Reference:
    """A reference table and, when known, the model it belongs to."""

    table: FeatureTable
    model: Path | None = None


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """Parse ``--since``: an ISO 8601 time (UTC if no zone) or an age like ``30m``, ``2h``, ``7d``.

    Raises:
        UsageError: If the text is neither.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    match = _DURATION.match(text.strip().lower())
    if match:
        return now - dt.timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"invalid --since {text!r}", hint="Use an ISO time (2025-01-31T12:00) or an age: 2h, 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def default_reference(root: Path | None = None) -> Path:
    """The newest ``runs/*/reference.csv`` under ``root`` (default: the current folder).

    Raises:
        UsageError: If there is none.
    """
    found = sorted((root or Path.cwd()).glob(f"runs/*/{REFERENCE_NAME}"), key=os.path.getmtime)
    if not found:
        raise UsageError(
            "no --reference given and no runs/*/reference.csv here",
            hint="Pass --reference MODEL, a reference.csv, or a dataset folder",
        )
    return found[-1]


def load_reference(spec: Path | None, split: str | None = None) -> Reference:
    """Open ``--reference``: a feature CSV, a model or run folder, or a dataset folder."""
    path = Path(spec) if spec is not None else default_reference()
    if path.suffix in MODEL_SUFFIXES:
        if not path.exists():
            raise UsageError(f"model {path} does not exist", hint="Check --reference")
        return Reference(load_table(reference_path_for(path)), path)
    if path.is_dir() and (path / REFERENCE_NAME).is_file():
        best = path / "checkpoints" / "best.ckpt"
        return Reference(load_table(path / REFERENCE_NAME), best if best.is_file() else None)
    if path.is_dir():
        return Reference(compute_features(path, split))
    return Reference(load_table(path))


def load_current(
    spec: str,
    reference: Reference,
    window: int | None = None,
    since: dt.datetime | None = None,
    split: str | None = None,
) -> FeatureTable:
    """Open ``--current`` (not a URL) as a table with the reference's class-share columns.

    Raises:
        DataError: If the log is empty or malformed, or the path holds no features (exit 2).
    """
    shares = reference.table.share_classes
    if spec.startswith("gs://"):
        # Without --since only the newest `window` records are needed: fewer downloads.
        records = _read_gcs(spec, window if since is None else None)
        return table_from_log(_filter(records, window, since), shares, source=spec)
    path = Path(spec)
    if path.is_dir() and (path / "predictions.sqlite").is_file():
        return table_from_log(_read_log(path, window, since), shares, source=str(path))
    if path.is_dir() and any(path.glob("*.jsonl")):
        records = _filter(_read_jsonl(sorted(path.glob("*.jsonl"))), window, since)
        return table_from_log(records, shares, source=str(path))
    if path.is_file() and path.suffix in {".jsonl", ".json"}:
        return table_from_log(_filter(_read_jsonl([path]), window, since), shares, str(path))
    if path.is_file():
        return _last(load_table(path), window)
    if path.is_dir() and _is_dataset(path):
        predict, lineage = (None, None)
        if reference.model is not None and reference.table.has_predictions:
            predict, lineage = load_predictor(reference.model)
        table = compute_features(
            path, split, lineage=lineage, predict=predict, share_classes=shares or None
        )
        return _last(table, window)
    if path.is_dir():
        raise DataError(
            f"{path} holds no prediction log (no predictions.sqlite or *.jsonl)",
            hint="Point --current at the folder given to 'cmi serve --log-dir'",
            exit_code=2,
        )
    raise DataError(f"--current {spec} does not exist", hint="Check the path", exit_code=2)


def _is_dataset(path: Path) -> bool:
    from cmi_cli.data.layout import open_dataset

    try:
        open_dataset(path)
    except DataError:
        return False
    return True


def _read_log(path: Path, window: int | None, since: dt.datetime | None) -> list[dict[str, Any]]:
    import sqlite3

    from cmi_cli.monitoring.prediction_log import read_predictions

    try:
        records = read_predictions(path, window=window, since=since)
    except sqlite3.DatabaseError as exc:
        raise DataError(
            f"the prediction log in {path} is unreadable ({exc})",
            hint="Check that it was written by 'cmi serve' and is not truncated",
            exit_code=2,
        ) from None
    if not records:
        what = " in that time range" if since is not None else ""
        raise DataError(
            f"the prediction log in {path} has no records{what}",
            hint="Send requests to the server first, or widen --since",
            exit_code=2,
        )
    return records


def _read_gcs(url: str, window: int | None = None) -> list[dict[str, Any]]:
    from cmi_cli.monitoring.prediction_log import read_gcs_predictions

    try:
        records = read_gcs_predictions(url, window=window or None)
    except ValueError as exc:
        hint = "Use prediction logs written by 'cmi serve'"
        raise DataError(str(exc), hint=hint, exit_code=2) from None
    except Exception as exc:  # the storage client's errors: no access, no bucket, no network
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"cannot read the prediction log at {url}: {first}",
            hint="Check the bucket and credentials (docs/cloud.md)",
            exit_code=2,
        ) from None
    if not records:
        raise DataError(
            f"no prediction records under {url}",
            hint="Send requests to the server first; it uploads every 1000 records or 5 minutes",
            exit_code=2,
        )
    return records


def _read_jsonl(files: list[Path]) -> list[dict[str, Any]]:
    records = []
    for file in files:
        for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                raise DataError(
                    f"{file} line {line_no} is not a JSON prediction record",
                    hint="Use prediction logs written by 'cmi serve'",
                    exit_code=2,
                )
            records.append(record)
    if not records:
        raise DataError(
            f"no prediction records in {', '.join(map(str, files))}",
            hint="Send requests to the server first",
            exit_code=2,
        )
    return sorted(records, key=lambda r: float(r.get("ts", 0)))


def _filter(
    records: list[dict[str, Any]], window: int | None, since: dt.datetime | None
) -> list[dict[str, Any]]:
    if since is not None:
        records = [r for r in records if float(r.get("ts", 0)) >= since.timestamp()]
    return records[-window:] if window else records


def _last(table: FeatureTable, window: int | None) -> FeatureTable:
    return table.subset(len(table) - window, len(table)) if window else table


def fetch_server_drift(
    url: str, window: int | None = None, api_key: str | None = None, timeout: float = 120
) -> DriftResult:
    """Ask a running ``cmi serve`` for its drift summary (``GET /v1/drift``).

    Raises:
        DataError: If the server cannot be reached or answers with an error (exit 2).
    """
    query = {"format": "json", **({"window": str(window)} if window else {})}
    full = url.rstrip("/") + "/v1/drift?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(full, headers={"Accept": "application/json"})
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = _error_message(exc)
        raise DataError(
            f"{full} answered {exc.code}: {detail}",
            hint="Pass the API key with --api-key-env" if exc.code == 401 else None,
            exit_code=2,
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"cannot reach {url} ({reason})", hint="Is cmi serve running?", exit_code=2
        ) from None
    result = DriftResult.from_dict(body)
    result.current = result.current or url
    return result


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except Exception:  # any body that is not our error JSON
        return exc.reason or "error"


def drift_check(
    reference: Path | None,
    current: str,
    *,
    window: int | None = None,
    since: dt.datetime | None = None,
    threshold: float | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    out_dir: Path | None = None,
    split: str | None = None,
    api_key: str | None = None,
) -> tuple[DriftResult, dict[str, Path]]:
    """Run ``cmi drift-check``: compare ``current`` with ``reference`` and save the report.

    Args:
        reference: ``--reference`` (None: the newest ``runs/*/reference.csv``).
        current: ``--current``: a path, or a server's URL.
        window: Only the last ``window`` samples.
        since: Only log records from this time on.
        threshold: Drifted-feature share above which the data drifts (None: the default, or
            for a server, the server's own).
        min_samples: Fewest current (and reference) samples to accept.
        out_dir: Report folder; default ``reports/drift/<timestamp>/``.
        split: Split of a dataset folder given as reference or current.
        api_key: Key for a server that requires one.

    Returns:
        The result and the files written (``report.json``; ``report.html`` and
        ``evidently.json`` unless the result came from a server).
    """
    if current.startswith(("http://", "https://")):
        result = fetch_server_drift(current, window, api_key)
        if threshold is not None:
            result.threshold = threshold
    else:
        ref = load_reference(reference, split)
        cur = load_current(current, ref, window, since, split)
        limit = DEFAULT_THRESHOLD if threshold is None else threshold
        result = run_drift(ref.table, cur, limit, min_samples)
    from cmi_cli.monitoring.drift import default_out_dir

    paths = save_report(result, out_dir or default_out_dir())
    return result, paths
