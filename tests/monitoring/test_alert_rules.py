"""Alert rules and policies: valid, unit-tested, and about metrics the service really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
GCP = REPO / "deploy" / "gcp"
# Cloud Run's built-in metrics the policies may use.
CLOUD_RUN_METRICS = {"run.googleapis.com/request_count", "run.googleapis.com/request_latencies"}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    out = subprocess.run([PROMTOOL, "check", "rules", str(PROMETHEUS / "alerts.yml")],  # type: ignore[list-item]
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 rules found" in out.stdout


@needs_promtool
def test_promtool_unit_tests_fire_every_rule() -> None:
    out = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS,  # type: ignore[list-item]
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    assert fired == {r["alert"] for r in rules}


@needs_promtool
def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    text = (PROMETHEUS / "alerts.yml").read_text().replace("> 0.05", "> > 0.05")
    (tmp_path / "alerts.yml").write_text(text)
    out = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "alerts.yml")],  # type: ignore[list-item]
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0


def exported_sample_names() -> set[str]:
    """Sample names a service's /metrics shows once it has served, with drift monitoring on."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from cmi_cli.monitoring.drift import DriftResult, FeatureDrift
    from cmi_cli.monitoring.drift_service import DriftMonitor
    from cmi_cli.monitoring.reference import FeatureTable
    from cmi_cli.serving.metrics import ServeMetrics

    metrics = ServeMetrics()
    metrics.requests.labels("/v1/segment", "POST", "200").inc()
    metrics.request_latency.labels("/v1/segment", "POST").observe(0.1)
    monitor = DriftMonitor(FeatureTable(["brightness"]), Path("."), metrics.registry)
    result = DriftResult([FeatureDrift("brightness", "K-S p_value", 0.01, 0.05, True)], 1.0, 0.2,
                         40, 40)  # fmt: skip
    monitor._publish(result)
    text = generate_latest(metrics.registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_rules_name_only_exported_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    exported = exported_sample_names() | {"up"}
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    exprs = " ".join(r["expr"] for r in rules)
    named = set(re.findall(r"\b(cmi_[a-z0-9_]+|up)\b(?=[{)\s])", exprs))
    assert {"cmi_http_requests_total", "cmi_drift_share", "cmi_drift_threshold"} <= named
    # cmi_model_ready is published by the service's readiness (serving/metrics.py).
    missing = named - exported - {"cmi_model_ready"}
    assert not missing, f"rules use metrics the service does not export: {missing}"


def test_gcp_policies_parse_and_use_real_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    from cmi_cli.monitoring.drift_service import LOG_EVENT

    log_metric = yaml.safe_load((GCP / "log-metrics" / "cmi-drift-share.yaml").read_text())
    assert f'jsonPayload.event="{LOG_EVENT}"' in log_metric["filter"]
    field = re.fullmatch(r"EXTRACT\(jsonPayload\.(\w+)\)", log_metric["valueExtractor"])
    assert field is not None
    # The line the service writes carries that field.
    exported_sample_names()
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == LOG_EVENT
    assert field[1] in line
    assert isinstance(line[field[1]], float)

    allowed = CLOUD_RUN_METRICS | {f"logging.googleapis.com/user/{log_metric['name']}"}
    files = sorted((GCP / "alert-policies").glob("*.json"))
    assert len(files) == 3
    used = set()
    for file in files:
        policy = json.loads(file.read_text())
        assert policy["displayName"]
        assert policy["documentation"]["content"]
        for condition in policy["conditions"]:
            threshold = condition["conditionThreshold"]
            for key in ("filter", "denominatorFilter"):
                if key in threshold:
                    types = re.findall(r'metric\.type="([^"]+)"', threshold[key])
                    assert len(types) == 1, (file.name, types)
                    assert types[0] in allowed, (file.name, types)
                    used.add(types[0])
            assert re.fullmatch(r"\d+s", threshold["duration"])
    assert used == allowed
