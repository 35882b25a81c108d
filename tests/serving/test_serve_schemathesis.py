"""Property-based API testing: schemathesis against the live OpenAPI schema of `cmi serve`.

Fixed seed and bounded examples, so CI runs the same cases every time. Every check runs
(``--checks all``), with and without an API key; deploy/schemathesis.toml says which
answers the positive/negative-data checks accept for uploads, and why.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _serve_helpers import LiveServer, ServeModels

pytest.importorskip("schemathesis")
pytestmark = pytest.mark.slow

CHECKS = "all"
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "schemathesis.toml"


def run_schemathesis(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
            "run", f"{url}/openapi.json",
            "--checks", CHECKS, "--seed", "20240601", "--max-examples", "15",
            "--workers", "1", "--request-timeout", "30", "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path / "report"), *extra,
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip


def test_no_server_error_and_schema_conformance(
    serve_models: ServeModels, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server(serve_models.onnx, ["--no-access-log", "--max-upload-mb", "1"])
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})  # no key: no auth promised
    out = run_schemathesis(server.url, tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "7 selected" in out.stdout  # /v1/drift included
    assert "generated" in out.stdout
    assert "Traceback" not in server.logs()


def test_with_api_key(
    serve_models: ServeModels, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server(
        serve_models.onnx, ["--no-access-log", "--api-key-env", "ST_KEY"], ST_KEY="x1"
    )
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    out = run_schemathesis(server.url, tmp_path, "-H", "X-API-Key: x1")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "7 selected" in out.stdout
    assert "Traceback" not in server.logs()
