"""A real Prometheus scrapes a live `cmi serve` with our rules file and raises our 5xx alert.

The rules are deploy/prometheus/alerts.yml as shipped (loaded by path, not rewritten).
Prometheus scrapes and evaluates every second; an alert goes *pending* at the first
evaluation where its expression holds, so the test sees CmiHigh5xxRate pending (its ``for:``
of 5 minutes would delay *firing*; `promtool test rules` covers firing, in
tests/monitoring/test_alert_rules.py).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from _scale_servers import free_port, prometheus_binary, prometheus_server
from PIL import Image

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def big_photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_prometheus_sees_our_5xx_alert_go_pending(trained: Path, tmp_path: Path) -> None:
    prometheus_binary()  # skip (or, in CI, fail) before starting anything
    ckpt = next((trained / "runs").glob("served*")) / "checkpoints" / "best.ckpt"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMI_")}
    # One image at a time and no queue: concurrent requests get 503 (a server-side refusal).
    env.update(CMI_MAX_CONCURRENCY="1", CMI_MAX_QUEUE="0", CMI_LOG_PREDICTIONS="false")
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "cmi_cli", "serve", str(ckpt), "--port", str(port)],
        env=env, cwd=trained, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: cmi-serve\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, server, tmp_path)
        with prometheus_server(config, tmp_path) as prom:
            rules = prom.api("rules")["groups"]
            assert {r["name"] for g in rules for r in g["rules"]} >= {
                "CmiHigh5xxRate",
                "CmiHighP99Latency",
            }, "our rules file is loaded"
            started = time.monotonic()
            states: dict[str, str] = {}
            refused = 0
            photos = [big_photo(i) for i in range(4)]
            with ThreadPoolExecutor(8) as pool:
                while time.monotonic() - started < 90:
                    answers = list(pool.map(lambda b: _segment(base, b), photos * 2))
                    refused += sum(1 for code in answers if code == 503)
                    alerts = prom.api("alerts")["alerts"]
                    states = {a["labels"]["alertname"]: a["state"] for a in alerts}
                    if states.get("CmiHigh5xxRate") in ("pending", "firing"):
                        break
            print(f"5xx alert pending after {time.monotonic() - started:.1f} s")
            assert refused > 0, "the server never refused a request"
            assert states.get("CmiHigh5xxRate") in ("pending", "firing"), states
            [target] = prom.api("targets")["activeTargets"]
            assert target["health"] == "up"
    finally:
        server.terminate()
        server.wait(60)


def _segment(base: str, body: bytes) -> int:
    try:
        return httpx.post(
            f"{base}/v1/segment", files={"file": ("p.png", body)}, timeout=60
        ).status_code
    except httpx.HTTPError:
        return 0


def _wait_ready(base: str, server: subprocess.Popen[bytes], tmp: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, (tmp / "serve.log").read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp / "serve.log").read_text()
        time.sleep(0.3)
