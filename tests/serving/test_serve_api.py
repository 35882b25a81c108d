"""The API on a real exported model, through FastAPI's TestClient."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _serve_helpers import ServeModels, make_photo
from fastapi.testclient import TestClient
from PIL import Image

from cmi_cli.serving.app import create_app
from cmi_cli.serving.predictor import ServedModel
from cmi_cli.serving.settings import ServeSettings


def wait_ready(client: TestClient, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(
    serve_models: ServeModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    log_dir = tmp_path_factory.mktemp("api_log")
    settings = ServeSettings(model=serve_models.onnx, log_dir=str(log_dir))
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def segment(client: TestClient, data: bytes, name: str = "p.jpg", **params: Any) -> Any:
    return client.post("/v1/segment", params=params, files={"file": (name, data, "image/jpeg")})


def test_segment_returns_classes_largest_first(client: TestClient) -> None:
    r = segment(client, make_photo(120, 80))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 120, "height": 80}
    shares = [c["share"] for c in body["classes"]]
    assert shares == sorted(shares, reverse=True)
    assert sum(shares) == pytest.approx(1.0, abs=1e-6)
    assert all(0 < c["confidence"] <= 1 for c in body["classes"])
    assert body["inference_ms"] > 0
    assert body["latency_ms"] >= body["inference_ms"]
    assert body["overlay_jpeg_base64"] is None
    assert r.headers["x-request-id"] == body["request_id"]


def test_model_id_names_the_file(client: TestClient, serve_models: ServeModels) -> None:
    from cmi_cli.export.metadata import sha256_file

    model = client.get("/v1/model").json()
    assert model["id"] == f"fast_unet-{sha256_file(serve_models.onnx)[:12]}"
    assert segment(client, make_photo()).json()["model_id"] == model["id"]
    assert model["num_classes"] == len(model["classes"]) == 104
    assert model["input_size"] == 32
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c["color"]) for c in model["classes"])
    assert model["classes"][0] == {"id": 0, "name": "background", "color": "#000000"}
    assert model["lineage"]["kind"] == "onnx"
    assert "val/miou" in model["metrics"]


def test_mask_is_a_png_of_class_ids_at_photo_size(client: TestClient) -> None:
    photo = make_photo(90, 60, seed=3)
    found = {c["id"] for c in segment(client, photo).json()["classes"]}
    r = segment(client, photo, output="mask")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    mask = Image.open(io.BytesIO(r.content))
    assert mask.mode == "L"
    assert mask.size == (90, 60)
    assert set(np.unique(np.asarray(mask)).tolist()) <= found


def test_overlay_is_the_photo_with_colours(client: TestClient) -> None:
    photo = make_photo(64, 48, seed=1)
    r = segment(client, photo, output="overlay")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    overlay = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), dtype=np.int16)
    assert overlay.shape == original.shape
    assert np.abs(overlay - original).mean() > 5  # coloured, not the photo returned as is

    body = segment(client, photo, overlay="true").json()
    assert body["overlay_jpeg_base64"]


def test_large_jpeg_reports_its_full_size(client: TestClient) -> None:
    """A big JPEG is decoded at reduced scale for JSON, yet answers at its real size."""
    from cmi_cli.serving.images import decode_photo

    photo = make_photo(1600, 1200, seed=2)
    small, size = decode_photo(photo, 10**8, min_side=256)
    assert size == (1600, 1200)
    assert small.shape[:2] == (300, 400)
    body = segment(client, photo).json()
    assert body["image"] == {"width": 1600, "height": 1200}
    mask = Image.open(io.BytesIO(segment(client, photo, output="mask").content))
    assert mask.size == (1600, 1200)
    overlay = Image.open(io.BytesIO(segment(client, photo, output="overlay").content))
    assert overlay.size == (1600, 1200)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_are_accepted(client: TestClient, fmt: str) -> None:
    r = segment(client, make_photo(50, 40, fmt=fmt), name=f"p.{fmt.lower()}")
    assert r.status_code == 200, r.text


def test_results_match_direct_onnx_inference(client: TestClient, serve_models: ServeModels) -> None:
    """Serving preprocesses exactly like evaluation: same classes as ORT on EvalTransform."""
    from cmi_cli.data.transforms import EvalTransform
    from cmi_cli.export.ort_predict import OnnxPredictor

    photo = make_photo(70, 70, seed=5)
    ort = OnnxPredictor(serve_models.onnx)
    pre = ort.lineage["preprocessing"]
    rgb = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    x, _ = EvalTransform(pre["image_size"], tuple(pre["mean"]), tuple(pre["std"]))(
        rgb, np.zeros(rgb.shape[:2], np.uint8)
    )
    ids = ort.predict(x[None])[0].argmax(0)
    counts = np.bincount(ids.ravel(), minlength=104)
    expected = {int(i): counts[i] / ids.size for i in np.nonzero(counts)[0]}
    got = {c["id"]: c["share"] for c in segment(client, photo).json()["classes"]}
    assert got == pytest.approx(expected)


def test_batch_gives_per_image_results(client: TestClient) -> None:
    files = [
        ("files", ("a.jpg", make_photo(40, 30), "image/jpeg")),
        ("files", ("b.txt", b"not an image", "text/plain")),
        ("files", ("c.png", make_photo(30, 40, fmt="PNG"), "image/png")),
    ]
    r = client.post("/v1/segment/batch", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3
    a, b, c = body["results"]
    assert (a["status"], b["status"], c["status"]) == (200, 415, 200)
    assert a["result"]["image"] == {"width": 40, "height": 30}
    assert c["result"]["image"] == {"width": 30, "height": 40}
    assert b["error"]["code"] == "not_an_image"
    assert b["result"] is None
    assert a["result"]["classes"] == segment(client, make_photo(40, 30)).json()["classes"]


def test_batch_limit(client: TestClient) -> None:
    files = [("files", (f"{i}.jpg", make_photo(8, 8), "image/jpeg")) for i in range(17)]
    r = client.post("/v1/segment/batch", files=files)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "too_many_files"


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    spec = client.get("/openapi.json").json()
    for path in ("/v1/segment", "/v1/segment/batch", "/v1/model", "/healthz", "/readyz"):
        assert path in spec["paths"]
    seg = spec["paths"]["/v1/segment"]["post"]["responses"]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(seg)
    assert seg["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert "SegmentResponse" in spec["components"]["schemas"]


class SlowBackend:
    """Wraps a backend, sleeping before each call (to make overload and warm-up observable)."""

    def __init__(self, inner: Any, delay: float, warm_delay: float | None = None) -> None:
        self.inner, self.delay = inner, delay
        self.warm_delay = delay if warm_delay is None else warm_delay
        self.lineage = inner.lineage
        self.calls = 0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self.warm_delay if self.calls == 1 else self.delay)
        return self.inner.predict(batch)


def slow_model(path: Path, delay: float, warm_delay: float | None = None) -> ServedModel:
    from cmi_cli.export.ort_predict import OnnxPredictor

    return ServedModel(SlowBackend(OnnxPredictor(path), delay, warm_delay), path, "onnx")


def test_overload_answers_503_with_retry_after(serve_models: ServeModels, tmp_path: Path) -> None:
    settings = ServeSettings(
        model=serve_models.onnx,
        log_dir=str(tmp_path),
        max_concurrency=1,
        max_queue=1,
        retry_after_s=3,
        warmup_runs=0,
    )
    app = create_app(settings, served=slow_model(serve_models.onnx, delay=1.5))
    statuses: list[int] = []
    headers: list[str | None] = []
    with TestClient(app) as c:
        wait_ready(c)

        barrier = threading.Barrier(5)
        photo = make_photo(20, 20)

        def call() -> None:
            barrier.wait()
            r = segment(c, photo)
            statuses.append(r.status_code)
            headers.append(r.headers.get("retry-after"))

        threads = [threading.Thread(target=call) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = c.get("/metrics").text
    # All five arrive while the first runs: one runs, one waits, three are refused at once.
    assert sorted(statuses) == [200, 200, 503, 503, 503]
    assert headers.count("3") == 3
    assert "cmi_overload_rejections_total 3.0" in metrics


def test_readyz_waits_for_warmup(serve_models: ServeModels, tmp_path: Path) -> None:
    settings = ServeSettings(model=serve_models.onnx, log_dir=str(tmp_path), warmup_runs=1)
    app = create_app(settings, served=slow_model(serve_models.onnx, delay=0, warm_delay=1.0))
    with TestClient(app) as c:
        first = c.get("/readyz")
        assert first.status_code == 503
        assert first.json()["error"]["code"] == "not_ready"
        assert first.headers["Retry-After"] == "1"  # a probe or client knows when to ask again
        assert c.get("/healthz").status_code == 200
        wait_ready(c)


def test_micro_batching_groups_concurrent_requests(
    serve_models: ServeModels, tmp_path: Path
) -> None:
    settings = ServeSettings(
        model=serve_models.onnx,
        log_dir=str(tmp_path),
        batch_size=4,
        batch_wait_ms=200,
        max_concurrency=4,
    )
    photos = [make_photo(30 + i, 30, seed=i) for i in range(4)]
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        results: dict[int, Any] = {}

        def call(i: int) -> None:
            results[i] = segment(c, photos[i]).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = c.get("/metrics").text
        singles = [segment(c, p).json() for p in photos]
    for i in range(4):
        batched, single = results[i]["classes"], singles[i]["classes"]
        assert [x["id"] for x in batched] == [x["id"] for x in single]
        assert [x["share"] for x in batched] == pytest.approx([x["share"] for x in single])
    count = re.search(r"cmi_inference_batch_size_count ([\d.]+)", metrics)
    total = re.search(r"cmi_inference_batch_size_sum ([\d.]+)", metrics)
    assert count
    assert total
    assert float(total.group(1)) == 4
    assert float(count.group(1)) < 4


def test_torch_backend_serves_the_checkpoint(serve_models: ServeModels, tmp_path: Path) -> None:
    photo = make_photo(64, 64, seed=7)
    settings = ServeSettings(model=serve_models.ckpt, log_dir=str(tmp_path))
    assert settings.resolved_backend == "torch"
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        body = segment(c, photo).json()
        assert c.get("/v1/model").json()["backend"] == "torch"
    onnx_settings = ServeSettings(model=serve_models.onnx, log_dir=str(tmp_path))
    with TestClient(create_app(onnx_settings)) as c:
        wait_ready(c)
        onnx_body = segment(c, photo).json()
    assert [x["id"] for x in body["classes"]] == [x["id"] for x in onnx_body["classes"]]
    assert body["model_id"].startswith("fast_unet-")
    assert body["model_id"] != onnx_body["model_id"]


def test_model_info_shows_no_absolute_server_path(client: TestClient) -> None:
    info = client.get("/v1/model").json()
    text = str(info)
    assert "/tmp" not in text
    assert str(Path.home()) not in text
    # Names relative to the model's folder instead.
    assert info["lineage"]["parent"]["path"] == "checkpoints/best.ckpt"
    assert not info["lineage"]["data"]["path"].startswith("/")


def test_overlay_is_capped_and_says_its_size(serve_models: ServeModels, tmp_path: Path) -> None:
    settings = ServeSettings(
        model=serve_models.onnx, log_dir=str(tmp_path), max_output_pixels=120_000
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        photo = make_photo(800, 600, fmt="PNG", seed=5)
        body = segment(c, photo, "p.png", overlay="true").json()
        assert body["image"] == {"width": 800, "height": 600}
        assert body["output"] == {"width": 400, "height": 300}
        overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_jpeg_base64"])))
        assert overlay.size == (400, 300)
        mask = segment(c, photo, "p.png", output="mask")
        assert mask.headers["X-Output-Size"] == "400x300"
        assert Image.open(io.BytesIO(mask.content)).size == (400, 300)
        small = segment(c, make_photo(200, 100, seed=1), output="overlay")
        assert small.headers["X-Output-Size"] == "200x100"  # under the cap: the photo's size
