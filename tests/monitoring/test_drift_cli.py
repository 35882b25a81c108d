"""`cmi drift-check` end to end: inputs of every kind, exit codes, clear errors."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from _drift_fixtures import DriftData
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.monitoring.features import image_features
from cmi_cli.monitoring.sources import parse_since

runner = CliRunner()


def drift_check(*args: str | Path) -> Any:
    return runner.invoke(app, ["drift-check", *map(str, args)])


def log_records(root: Path, split: str = "test") -> list[dict[str, Any]]:
    """Prediction-log records as `cmi serve` writes them, for the photos of a dataset split."""
    import numpy as np
    from PIL import Image

    out = []
    for i, path in enumerate(sorted((root / "Images" / "img_dir" / split).glob("*.jpg"))):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        out.append(
            {
                "ts": time.time() - 3600 + i, "model_id": "m", "request_id": f"r{i}",
                "latency_ms": 5.0, "inference_ms": 3.0, "width": rgb.shape[1],
                "height": rgb.shape[0], "mean_confidence": 0.5, "p10_confidence": 0.2,
                "mean_entropy": 1.0, "image_features": image_features(rgb),
                "class_shares": {"background": 0.7, "rice": 0.3},
            }
        )  # fmt: skip
    return out


def write_log(folder: Path, records: list[dict[str, Any]]) -> Path:
    from cmi_cli.serving.store import SqliteSink

    sink = SqliteSink(folder)
    if records:
        sink.write(records)
    sink.close()
    return folder


def test_same_distribution_passes_the_gate(
    reference_csv: Path, drift_data: DriftData, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    r = drift_check("--reference", reference_csv, "--current", drift_data.same, "--split", "test",
                    "--out", out, "--fail-on-drift")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "no drift" in r.output
    assert "brightness" in r.output
    assert "K-S p_value" in r.output
    assert {p.name for p in out.iterdir()} == {"report.html", "report.json", "evidently.json"}


def test_brighter_photos_fail_the_gate_only_when_asked(
    reference_csv: Path, drift_data: DriftData, tmp_path: Path
) -> None:
    args: list[str | Path] = ["--reference", reference_csv, "--current", drift_data.bright]
    args += ["--split", "test"]
    gated = drift_check(*args, "--out", tmp_path / "a", "--fail-on-drift")
    assert gated.exit_code == 1, gated.output
    assert "DRIFT" in gated.output
    summary = json.loads((tmp_path / "a" / "report.json").read_text())
    assert "brightness" in [f["feature"] for f in summary["features"] if f["drifted"]]
    assert drift_check(*args, "--out", tmp_path / "b").exit_code == 0
    # A threshold of 1 can never be exceeded.
    lax = drift_check(*args, "--out", tmp_path / "c", "--fail-on-drift", "--threshold", "1")
    assert lax.exit_code == 0, lax.output


def test_prediction_log_with_window_and_since(
    reference_csv: Path, drift_data: DriftData, tmp_path: Path
) -> None:
    log = write_log(tmp_path / "log", log_records(drift_data.bright))
    r = drift_check("--reference", reference_csv, "--current", log, "--window", "35",
                    "--out", tmp_path / "r", "--fail-on-drift")  # fmt: skip
    assert r.exit_code == 1, r.output
    summary = json.loads((tmp_path / "r" / "report.json").read_text())
    assert summary["n_current"] == 35
    # Prediction columns are in the log but not in an image-only reference: not compared.
    assert "mean_confidence" in summary["skipped"]
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    r = drift_check("--reference", reference_csv, "--current", log, "--since", future)
    assert r.exit_code == 2
    assert "no records in that time range" in r.output


def test_too_few_samples_is_one_clear_line(
    reference_csv: Path, drift_data: DriftData, tmp_path: Path
) -> None:
    log = write_log(tmp_path / "log", log_records(drift_data.same)[:10])
    r = drift_check("--reference", reference_csv, "--current", log, "--out", tmp_path / "r")
    assert r.exit_code == 2
    assert "only 10 current samples" in r.output
    assert "at least 30" in r.output
    assert not (tmp_path / "r").exists()


def test_empty_and_malformed_logs_are_clear_errors(reference_csv: Path, tmp_path: Path) -> None:
    empty = write_log(tmp_path / "empty", [])
    r = drift_check("--reference", reference_csv, "--current", empty)
    assert r.exit_code == 2
    assert "has no records" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ts": 1}\nnot json\n')
    r = drift_check("--reference", reference_csv, "--current", bad)
    assert r.exit_code == 2
    assert "line 2 is not a JSON prediction record" in r.output
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"ts": 1, "class_shares": {}}) + "\n")
    r = drift_check("--reference", reference_csv, "--current", partial)
    assert r.exit_code == 2
    assert "record 0" in r.output
    assert "malformed" in r.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "predictions.sqlite").write_bytes(b"this is not a database" * 10)
    r = drift_check("--reference", reference_csv, "--current", broken)
    assert r.exit_code == 2
    assert "unreadable" in r.output
    r = drift_check("--reference", tmp_path / "nope.csv", "--current", empty)
    assert r.exit_code == 2
    assert "does not exist" in r.output
    not_table = tmp_path / "x.csv"
    not_table.write_text("a,b\n1,zz\n")
    r = drift_check("--reference", not_table, "--current", empty)
    assert r.exit_code == 2
    assert "not a feature table" in r.output


def test_jsonl_files_from_a_gcs_log(
    reference_csv: Path, drift_data: DriftData, tmp_path: Path
) -> None:
    folder = tmp_path / "gcs"
    folder.mkdir()
    records = log_records(drift_data.same)
    for i in (0, 1):
        part = records[i * 20 : (i + 1) * 20]
        (folder / f"predictions-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    r = drift_check("--reference", reference_csv, "--current", folder, "--out", tmp_path / "o",
                    "--fail-on-drift")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "report.json").read_text())["n_current"] == 40


def test_unreachable_server_is_a_clear_error(reference_csv: Path) -> None:
    r = drift_check("--reference", reference_csv, "--current", "http://127.0.0.1:9")
    assert r.exit_code == 2
    assert "cannot reach http://127.0.0.1:9" in r.output


def test_parse_since() -> None:
    now = dt.datetime(2025, 1, 31, 12, tzinfo=dt.timezone.utc)
    assert parse_since("2h", now) == now - dt.timedelta(hours=2)
    assert parse_since("7d", now) == now - dt.timedelta(days=7)
    assert parse_since("2025-01-30T10:00", now) == dt.datetime(
        2025, 1, 30, 10, tzinfo=dt.timezone.utc
    )
    from cmi_cli.errors import UsageError

    with pytest.raises(UsageError, match="invalid --since"):
        parse_since("yesterday", now)


def test_a_sqlite_log_is_read_oldest_first(drift_data: DriftData, tmp_path: Path) -> None:
    records = log_records(drift_data.same)[:3]
    write_log(tmp_path / "log", records)
    rows = sqlite3.connect(tmp_path / "log" / "predictions.sqlite").execute(
        "SELECT request_id FROM predictions ORDER BY id"
    )
    assert [r[0] for r in rows] == ["r0", "r1", "r2"]
