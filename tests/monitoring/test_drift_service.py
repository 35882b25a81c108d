"""Drift in the service: the background refresher, its gauges and log line, GET /v1/drift."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _drift_fixtures import DriftData, MonitorProject
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry, generate_latest

from cmi_cli.monitoring.drift_service import DriftMonitor, monitor_from_settings
from cmi_cli.monitoring.features import image_features
from cmi_cli.monitoring.reference import load_table


def records_for(root: Path) -> list[dict[str, Any]]:
    out = []
    for i, path in enumerate(sorted((root / "Images" / "img_dir" / "test").glob("*.jpg"))):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        out.append(
            {
                "ts": time.time() + i, "model_id": "m", "request_id": f"r{i}", "latency_ms": 5.0,
                "inference_ms": 3.0, "width": 48, "height": 48, "mean_confidence": 0.5,
                "p10_confidence": 0.2, "mean_entropy": 1.0, "image_features": image_features(rgb),
                "class_shares": {"background": 1.0},
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


def sample_value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    value = registry.get_sample_value(name, labels or None)
    return None if value is None else float(value)


def test_refresh_sets_gauges_and_writes_one_json_line(
    reference_csv: Path, drift_data: DriftData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = CollectorRegistry()
    log = write_log(tmp_path / "log", [])
    monitor = DriftMonitor(load_table(reference_csv), log, registry, window=40, model_id="m-1")
    assert math.isnan(sample_value(registry, "cmi_drift_share") or 0.0)
    assert sample_value(registry, "cmi_drift_threshold") == 0.2

    assert monitor.refresh() is None  # an empty log: no verdict, the gauge stays unknown
    assert "only 0 current samples" in monitor.status
    assert math.isnan(sample_value(registry, "cmi_drift_share") or 0.0)

    write_log(log, records_for(drift_data.bright))
    result = monitor.refresh()
    assert result is not None
    assert result.drifted
    assert sample_value(registry, "cmi_drift_share") == result.share
    assert sample_value(registry, "cmi_drift_detected") == 1.0
    assert sample_value(registry, "cmi_drift_samples") == 40.0
    assert sample_value(registry, "cmi_feature_drift", feature="brightness") == 1.0
    assert (sample_value(registry, "cmi_drift_last_refresh_timestamp_seconds") or 0) > 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "cmi_drift"
    assert line["drift_share"] == pytest.approx(result.share)
    assert line["model_id"] == "m-1"
    assert line["severity"] == "WARNING"
    assert "brightness" in line["drifted_features"]
    assert b"cmi_drift_share" in generate_latest(registry)


def test_the_background_task_refreshes_off_the_event_loop(
    reference_csv: Path, drift_data: DriftData, tmp_path: Path
) -> None:
    log = write_log(tmp_path / "log", records_for(drift_data.same))
    monitor = DriftMonitor(load_table(reference_csv), log, CollectorRegistry(), interval_s=3600)

    async def scenario() -> float:
        monitor.start()
        start, ticks = time.monotonic(), 0
        while monitor.latest is None and time.monotonic() - start < 120:
            await asyncio.sleep(0.01)  # the loop keeps turning while Evidently works
            ticks += 1
        await monitor.stop()
        return ticks

    ticks = asyncio.run(scenario())
    assert monitor.latest is not None
    assert not monitor.latest.drifted
    assert ticks > 10
    assert monitor.result() is monitor.latest  # fresh: served from the cache


def test_monitor_from_settings_explains_why_it_is_off(reference_csv: Path, tmp_path: Path) -> None:
    class Settings:
        model = tmp_path / "model.onnx"
        log_dir = str(tmp_path / "log")
        log_predictions = True
        reference = None
        drift_window = 50
        drift_interval_s = 10.0
        drift_threshold = 0.4
        drift_min_samples = None

    settings = Settings()
    monitor, why = monitor_from_settings(settings)
    assert monitor is None
    assert "no reference features found" in why
    settings.reference = reference_csv  # type: ignore[assignment]
    monitor, why = monitor_from_settings(settings)
    assert monitor is not None
    assert why == ""
    assert (monitor.window, monitor.interval_s, monitor.threshold) == (50, 10.0, 0.4)
    assert monitor.min_samples == 30
    import importlib.util

    find_spec = importlib.util.find_spec
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            importlib.util,
            "find_spec",
            lambda n, *a: None if n == "evidently" else find_spec(n, *a),
        )
        assert "needs Evidently" in monitor_from_settings(settings)[1]
    settings.log_dir = "gs://bucket/log"  # Cloud Run's log: read from the bucket
    on_gcs = monitor_from_settings(settings)[0]
    assert on_gcs is not None
    assert on_gcs.log_dir == "gs://bucket/log"
    settings.log_predictions = False
    assert "--no-log" in monitor_from_settings(settings)[1]


def drift_app(monitor: DriftMonitor | None, api_key: str | None = None) -> FastAPI:
    from cmi_cli.serving.errors import install_error_handlers
    from cmi_cli.serving.routes import drift

    app = FastAPI()
    app.state.drift, app.state.drift_reason, app.state.api_key = monitor, "drift is off: x", api_key
    install_error_handlers(app)
    app.include_router(drift.router)
    return app


def test_drift_route_json_html_key_and_errors(
    reference_csv: Path, drift_data: DriftData, tmp_path: Path
) -> None:
    log = write_log(tmp_path / "log", records_for(drift_data.blurred))
    monitor = DriftMonitor(load_table(reference_csv), log, window=40)
    client = TestClient(drift_app(monitor, api_key="k"))
    assert client.get("/v1/drift").status_code == 401
    headers = {"X-API-Key": "k"}
    r = client.get("/v1/drift", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_current"] == 40
    assert body["drifted"] is True
    assert "sharpness" in [f["feature"] for f in body["features"] if f["drifted"]]
    html = client.get("/v1/drift", params={"format": "html"}, headers=headers)
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "<html" in html.text[:2000].lower()
    few = client.get("/v1/drift", params={"window": 5}, headers=headers)
    assert few.status_code == 409
    assert few.json()["error"]["code"] == "insufficient_data"
    assert "only 5 current samples" in few.json()["error"]["message"]
    assert client.get("/v1/drift", params={"format": "xml"}, headers=headers).status_code == 422
    off = TestClient(drift_app(None)).get("/v1/drift")
    assert off.status_code == 404
    assert off.json()["error"]["message"] == "drift is off: x"


def test_served_app_refreshes_drift_in_the_background(
    monitor_project: MonitorProject,
    drift_data: DriftData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cmi_cli.export.onnx_export import export_onnx
    from cmi_cli.serving.app import create_app
    from cmi_cli.serving.settings import ServeSettings

    monkeypatch.chdir(monitor_project.root)
    onnx_path = export_onnx(monitor_project.ckpt, tmp_path / "m.onnx", num_images=1).path
    settings = ServeSettings(
        model=onnx_path, log_dir=str(tmp_path / "log"), drift_interval_s=0.2,
        drift_min_samples=10, drift_window=40, api_key="k",
    )  # fmt: skip
    headers = {"X-API-Key": "k"}
    photos = sorted((drift_data.bright / "Images" / "img_dir" / "test").glob("*.jpg"))[:12]
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert client.get("/v1/drift", headers=headers).status_code == 409
        for photo in photos:
            files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
            assert client.post("/v1/segment", files=files, headers=headers).status_code == 200
        deadline = time.monotonic() + 120
        while True:  # the refresher publishes once the log holds the requests
            text = client.get("/metrics").text
            share = re.search(r"^cmi_drift_share (\S+)$", text, re.M)
            if share and share[1] != "NaN":
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert "cmi_model_ready 1.0" in text
        assert "cmi_drift_threshold 0.2" in text
        # The refresher may have run when 10 of the 12 were logged (its minimum); a report is
        # reused only for its interval, so the next ones hold all 12.
        while (body := client.get("/v1/drift", headers=headers).json())["n_current"] != 12:
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        text = client.get("/metrics").text
        share = re.search(r"^cmi_drift_share (\S+)$", text, re.M)
        assert share
        assert {"brightness", "mean_confidence"} <= {f["feature"] for f in body["features"]}
        assert float(share[1]) == pytest.approx(body["share"])
        assert client.get("/v1/drift").status_code == 401
