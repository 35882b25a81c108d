"""A short Locust run against a real `cmi serve`: 10 users for 20 s, no failed request."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from _serve_helpers import LiveServer, ServeModels

# Only looked up, not imported: importing locust monkey-patches the process with gevent.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust not installed"
)
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_locust_short_load_has_no_failures(
    serve_models: ServeModels, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server(serve_models.onnx, ["--no-access-log"])
    out = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless",
            "--users", "10", "--spawn-rate", "5", "--run-time", "20s", "--host", server.url,
            "--csv", str(tmp_path / "locust"), "--html", str(tmp_path / "locust.html"),
            "--only-summary", "--exit-code-on-error", "1", "--stop-timeout", "10",
        ],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with (tmp_path / "locust_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0
    assert int(rows["/v1/segment"]["Request Count"]) >= 20
    assert (tmp_path / "locust.html").stat().st_size > 0
