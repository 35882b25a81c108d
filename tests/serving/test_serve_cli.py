"""`cmi serve` as a command: options, CMI_* variables, a real process, no torch, workers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _serve_helpers import LiveServer, ServeModels, make_photo
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.serving.settings import ServeSettings, load_settings


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--workers",
        "--backend",
        "--max-upload-mb",
        "--api-key-env",
    ):
        assert option in result.output


def test_missing_model_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMI_MODEL", raising=False)
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "none.onnx")])
    assert result.exit_code == 1
    assert "not found" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "CMI_MODEL" in result.output


def test_not_an_onnx_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    result = CliRunner().invoke(app, ["serve", str(bad)])
    assert result.exit_code == 1
    assert "not a loadable ONNX model" in result.output


def test_bad_backend_is_a_usage_error(serve_models: ServeModels) -> None:
    result = CliRunner().invoke(app, ["serve", str(serve_models.onnx), "--backend", "tf"])
    assert result.exit_code == 2
    assert "backend" in result.output


def test_settings_come_from_cmi_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CMI_MODEL", str(tmp_path / "m.onnx"))
    monkeypatch.setenv("CMI_PORT", "9123")
    monkeypatch.setenv("CMI_WORKERS", "3")
    monkeypatch.setenv("CMI_MAX_UPLOAD_MB", "2.5")
    settings = load_settings(port=8001)  # an option beats the variable
    assert settings.model == tmp_path / "m.onnx"
    assert settings.workers == 3
    assert settings.port == 8001
    assert settings.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert settings.resolved_backend == "onnx"
    rebuilt = ServeSettings(**{k[4:].lower(): v for k, v in settings.to_env().items()})
    assert rebuilt == settings


def test_threads_are_shared_between_workers(tmp_path: Path) -> None:
    from cmi_cli.serving.settings import available_cores

    cores = available_cores()
    one = ServeSettings(model=tmp_path / "m.onnx")
    assert one.concurrency == max(2, cores)
    assert one.session_threads == max(1, cores // one.concurrency)
    many = ServeSettings(model=tmp_path / "m.onnx", workers=64)
    assert many.session_threads == 1
    assert many.concurrency == 2
    latency = ServeSettings(model=tmp_path / "m.onnx", max_concurrency=1)
    assert latency.session_threads == cores  # one call at a time gets every core
    batched = ServeSettings(model=tmp_path / "m.onnx", batch_size=8)
    assert batched.concurrency >= 8
    assert batched.session_threads == cores
    assert ServeSettings(model=tmp_path / "m.onnx", threads=3).session_threads == 3


NO_TORCH_SCRIPT = """
import json, sys, time
import cmi_cli.cli.app  # everything `cmi serve` imports before serving
from fastapi.testclient import TestClient
from cmi_cli.serving.app import create_app
from cmi_cli.serving.predictor import ServedModel
from cmi_cli.serving.settings import load_settings
settings = load_settings(model=sys.argv[1], log_dir=sys.argv[2])
app = create_app(settings, served=ServedModel.load(settings.model, "onnx", 1))
with TestClient(app) as client:
    while client.get("/readyz").status_code != 200:
        time.sleep(0.05)
    files = {"file": ("a.png", open(sys.argv[3], "rb").read(), "image/png")}
    status = client.post("/v1/segment", files=files).status_code
    overlay = client.post("/v1/segment?output=overlay", files=files).status_code
print(json.dumps({"status": [status, overlay], "torch": "torch" in sys.modules,
                  "heavy": sorted(m for m in ("lightning", "pandas", "dvc") if m in sys.modules)}))
"""


def test_onnx_serving_never_imports_torch(serve_models: ServeModels, tmp_path: Path) -> None:
    photo = tmp_path / "a.png"
    photo.write_bytes(make_photo(50, 40, fmt="PNG"))
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(serve_models.onnx), str(tmp_path), str(photo)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"status": [200, 200], "torch": False, "heavy": []}


@pytest.mark.slow
def test_real_server_process(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(serve_models.onnx, ["--no-access-log"])
    r = httpx.post(
        f"{server.url}/v1/segment", files={"file": ("a.jpg", make_photo(), "image/jpeg")}
    )
    assert r.status_code == 200
    assert r.json()["classes"]
    assert httpx.get(f"{server.url}/").text.startswith("<!doctype html>")
    server.stop()
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal as its exit status.
    assert server.process.returncode in (0, -15)
    assert "serving fast_unet-" in server.logs()
    assert "Application shutdown complete" in server.logs()


@pytest.mark.slow
def test_container_style_start_from_variables_only(
    serve_models: ServeModels, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """No MODEL argument: CMI_MODEL and CMI_API_KEY_ENV configure the process."""
    server = live_server(None, [], CMI_MODEL=str(serve_models.onnx), CMI_API_KEY_ENV="K", K="abc")
    assert httpx.get(f"{server.url}/v1/model").status_code == 401
    assert httpx.get(f"{server.url}/v1/model", headers={"X-API-Key": "abc"}).status_code == 200


@pytest.mark.slow
def test_workers_share_metrics_and_the_prediction_log(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    from cmi_cli.serving.store import read_predictions

    server = live_server(serve_models.onnx, ["--workers", "2", "--no-access-log"])
    with httpx.Client(timeout=60) as client:
        for i in range(8):
            files = {"file": ("a.jpg", make_photo(40, 40, seed=i), "image/jpeg")}
            assert client.post(f"{server.url}/v1/segment", files=files).status_code == 200
        metrics = client.get(f"{server.url}/metrics").text
    found = re.search(
        r'cmi_http_requests_total\{method="POST",route="/v1/segment",status="200"\} ([\d.]+)',
        metrics,
    )
    assert found
    assert float(found.group(1)) == 8
    assert re.search(r'cmi_model_info\{.*model_id="fast_unet-', metrics)
    server.stop()
    assert len(read_predictions(server.log_dir)) == 8
