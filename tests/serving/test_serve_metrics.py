"""/metrics: the series the issue lists, with the right values, in a format promtool accepts."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _serve_helpers import ServeModels, make_photo
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cmi_cli.serving.app import create_app
from cmi_cli.serving.settings import ServeSettings


@pytest.fixture(scope="module")
def scraped(
    serve_models: ServeModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, object]]]:
    settings = ServeSettings(
        model=serve_models.onnx, log_dir=str(tmp_path_factory.mktemp("m")), max_upload_mb=0.1
    )
    with TestClient(create_app(settings)) as c:
        while c.get("/readyz").status_code != 200:
            time.sleep(0.02)
        files = {"file": ("a.jpg", make_photo(60, 40), "image/jpeg")}
        for _ in range(3):
            assert c.post("/v1/segment", files=files).status_code == 200
        assert c.post("/v1/segment", files={"file": ("a.txt", b"text")}).status_code == 415
        assert c.post("/v1/segment", files={"file": ("b.jpg", bytes(200_000))}).status_code == 413
        model = c.get("/v1/model").json()
        text = c.get("/metrics")
        assert text.headers["content-type"].startswith("text/plain")
        yield text.text, model


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out.append((s.labels, s.value))
    return out


def value(text: str, name: str, **labels: str) -> float:
    found = [v for lab, v in samples(text, name) if all(lab.get(k) == x for k, x in labels.items())]
    assert found, f"{name} {labels} not in /metrics"
    return sum(found)


def test_requests_by_route_and_status(scraped: tuple[str, dict[str, object]]) -> None:
    text, _ = scraped
    assert value(text, "cmi_http_requests_total", route="/v1/segment", status="200") == 3
    assert value(text, "cmi_http_requests_total", route="/v1/segment", status="415") == 1
    # Refused from its Content-Length before routing, yet counted under its route.
    assert value(text, "cmi_http_requests_total", route="/v1/segment", status="413") == 1
    assert value(text, "cmi_http_request_duration_seconds_count", route="/v1/segment") == 5


def test_inference_upload_and_pixel_histograms(scraped: tuple[str, dict[str, object]]) -> None:
    text, _ = scraped
    assert value(text, "cmi_inference_duration_seconds_count") >= 3
    assert value(text, "cmi_upload_bytes_count") == 4  # the 413 body never reached decoding
    assert value(text, "cmi_image_pixels_count") == 3
    assert value(text, "cmi_image_pixels_sum") == 3 * 60 * 40
    # The gauge counts the /metrics request being served.
    assert value(text, "cmi_http_requests_in_flight") == 1


def test_predicted_pixels_and_model_info(scraped: tuple[str, dict[str, object]]) -> None:
    text, model = scraped
    size = model["input_size"]  # type: ignore[index]
    assert value(text, "cmi_predicted_pixels_total") == 3 * size * size
    info = samples(text, "cmi_model_info")
    assert len(info) == 1
    labels, one = info[0]
    assert one == 1
    assert labels["model_id"] == model["id"]
    assert labels["backend"] == "onnx"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_exposition(
    scraped: tuple[str, dict[str, object]], tmp_path: Path
) -> None:
    text, _ = scraped
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
