"""The prediction log: bounded by age and count, on a folder and on gs:// (a real GCS emulator).

The live test serves a tiny trained checkpoint with ``CMI_LOG_DIR=gs://...`` and reads the
log back with `cmi drift-check --current gs://...`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from _scale_servers import GcsEmulator, free_port
from PIL import Image

from cmi_cli.errors import UsageError
from cmi_cli.serving.store import (
    GcsJsonlSink,
    Retention,
    SqliteSink,
    open_prediction_log,
    read_gcs_predictions,
    read_predictions,
)


def record(ts: float, n: int = 0) -> dict:
    return {
        "ts": ts, "model_id": "m", "request_id": f"r{n}", "latency_ms": 1.0,
        "inference_ms": 1.0, "width": 8, "height": 8, "mean_confidence": 0.5,
        "p10_confidence": 0.1, "mean_entropy": 1.0, "image_features": {"brightness": 0.5},
        "class_shares": {"background": 1.0},
    }  # fmt: skip


def test_sqlite_log_keeps_the_newest_records_within_age_and_count(tmp_path: Path) -> None:
    now = time.time()
    sink = SqliteSink(tmp_path, Retention(max_age_days=1, max_records=5, every_s=0))
    sink.write([record(now - 3 * 86400, i) for i in range(4)])  # too old
    sink.write([record(now - 10 + i, 10 + i) for i in range(8)])  # 8 fresh, 5 kept
    sink.close()
    kept = read_predictions(tmp_path)
    assert [r["request_id"] for r in kept] == [f"r{n}" for n in range(13, 18)]


def test_retention_comes_from_cmi_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Retention.from_env() == Retention()  # bounded by default
    monkeypatch.setenv("CMI_LOG_MAX_AGE_DAYS", "7")
    monkeypatch.setenv("CMI_LOG_MAX_RECORDS", "0")
    assert Retention.from_env() == Retention(max_age_days=7, max_records=0)
    monkeypatch.setenv("CMI_LOG_MAX_RECORDS", "lots")
    with pytest.raises(UsageError, match="CMI_LOG_MAX_RECORDS"):
        Retention.from_env()


def test_gcs_window_downloads_only_the_newest_files_and_matches_a_full_read(
    gcs: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud.storage import Blob

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    url = f"gs://{gcs.bucket}/window"
    now = time.time()
    # Two servers uploading side by side: their files' time ranges interleave.
    a = GcsJsonlSink(url, rotate_records=4, retention=Retention(0, 0))
    b = GcsJsonlSink(url, rotate_records=4, retention=Retention(0, 0))
    for k in range(6):
        a.write([record(now + 10 * k + i, 100 * k + i) for i in range(0, 8, 2)])
        b.write([record(now + 10 * k + i, 100 * k + i) for i in range(1, 8, 2)])
    a.close()
    b.close()
    everything = read_gcs_predictions(url)
    assert len(everything) == 48

    downloads: list[str] = []
    real = Blob.download_as_text

    def counted(self: Blob, *args: object, **kwargs: object) -> str:
        downloads.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Blob, "download_as_text", counted)
    for window in (1, 5, 8, 9, 48, 100):
        downloads.clear()
        got = read_gcs_predictions(url, window=window)
        assert got == everything[-window:], window
        if window <= 8:
            assert len(downloads) <= 3, (window, downloads)  # 12 files in all


def test_gcs_log_deletes_whole_files_past_the_bounds(
    gcs: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    now = time.time()
    url = f"gs://{gcs.bucket}/retention"
    old = GcsJsonlSink(url, rotate_records=3, retention=Retention(0, 0))
    old.write([record(now - 5 * 86400, i) for i in range(3)])  # one old file
    sink = GcsJsonlSink(url, rotate_records=3, retention=Retention(max_age_days=2, max_records=6))
    for k in range(4):  # four fresh files of 3 records: the newest two (6 records) stay
        sink.write([record(now + k, 10 + 3 * k + i) for i in range(3)])
    sink.close()
    names = sorted(gcs.objects("retention/"))
    assert len(names) == 2, names
    kept = read_gcs_predictions(url)
    assert [r["request_id"] for r in kept] == [f"r{n}" for n in range(16, 22)]


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_served_log_goes_to_gcs_and_drift_check_reads_it_back(
    trained: Path, gcs: GcsEmulator, tmp_path: Path
) -> None:
    run = next((trained / "runs").glob("served*"))
    ckpt = run / "checkpoints" / "best.ckpt"
    port = free_port()
    url = f"gs://{gcs.bucket}/served"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMI_")}
    env.update(STORAGE_EMULATOR_HOST=gcs.host, CMI_LOG_DIR=url, WANDB_MODE="disabled")
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "cmi_cli", "serve", str(ckpt), "--port", str(port)],
        env=env, cwd=trained, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        for i in range(6):
            r = httpx.post(f"{base}/v1/segment", files={"file": (f"{i}.png", photo(i))}, timeout=60)
            assert r.status_code == 200, r.text
    finally:
        server.terminate()  # SIGTERM flushes the buffered records to the bucket
        server.wait(60)
    assert server.returncode in (0, -15, 143), (tmp_path / "serve.log").read_text()
    stored = gcs.objects("served/")
    assert stored
    assert all(name.endswith(".jsonl") for name in stored)
    assert sum(data.count(b"\n") for data in stored.values()) == 6

    check = subprocess.run(
        [sys.executable, "-m", "cmi_cli", "drift-check", "--reference", str(run),
         "--current", url, "--min-samples", "2", "--out", str(tmp_path / "report")],
        cwd=trained, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode in (0, 1), check.stdout + check.stderr  # 1: drift found
    assert "Traceback" not in check.stderr
    assert (tmp_path / "report" / "report.json").is_file()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["n_current"] == 6
    assert report["current"] == url

    # The service's own drift monitor reads the same bucket (Cloud Run logs to gs://).
    from cmi_cli.monitoring.drift_service import DriftMonitor
    from cmi_cli.monitoring.model_reference import reference_path_for
    from cmi_cli.reference.table import load_table

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", gcs.host)
        monitor = DriftMonitor(load_table(reference_path_for(run)), url, min_samples=2)
        assert monitor.compute().n_current == 6


def test_open_prediction_log_bounds_a_folder_by_default(tmp_path: Path) -> None:
    log = open_prediction_log(str(tmp_path))
    assert isinstance(log.sink, SqliteSink)
    assert log.sink.retention == Retention()
    log.close()
