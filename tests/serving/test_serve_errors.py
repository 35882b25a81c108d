"""Bad input and security: every client error is JSON with the right status, never a 500."""

from __future__ import annotations

import io
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _serve_helpers import ServeModels, make_photo
from fastapi.testclient import TestClient
from PIL import Image

from cmi_cli.serving.app import create_app
from cmi_cli.serving.errors import ClientError
from cmi_cli.serving.images import decode_image, decode_photo
from cmi_cli.serving.settings import ServeSettings

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def client(
    serve_models: ServeModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    settings = ServeSettings(
        model=serve_models.onnx,
        log_dir=str(tmp_path_factory.mktemp("err_log")),
        max_upload_mb=0.25,
        max_pixels=250_000,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def upload(client: TestClient, data: bytes, name: str = "x.jpg", field: str = "file") -> Any:
    return client.post("/v1/segment", files={field: (name, data, "application/octet-stream")})


def assert_error(response: Any, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


def encoded(fmt: str, size: tuple[int, int] = (20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid, tiny PNG (a few kB) that declares ``width x height`` black grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    raw = zlib.compress(b"\x00" * ((width + 1) * height), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_no_file_is_422(client: TestClient) -> None:
    assert_error(client.post("/v1/segment"), 422, "validation_error")


def test_wrong_field_is_422(client: TestClient) -> None:
    r = upload(client, make_photo(), field="image")
    assert_error(r, 422, "validation_error")
    assert "file" in r.json()["error"]["message"]


def test_text_field_instead_of_file_is_422(client: TestClient) -> None:
    assert_error(client.post("/v1/segment", data={"file": "hello"}), 422)


def test_bad_query_is_422(client: TestClient) -> None:
    r = client.post("/v1/segment?output=gif", files={"file": ("a.jpg", make_photo())})
    assert_error(r, 422, "validation_error")


def test_a_query_parameter_given_twice_is_422_naming_it(client: TestClient) -> None:
    r = client.post(
        "/v1/segment?output=json&output=mask", files={"file": ("x.jpg", b"x", "image/jpeg")}
    )
    assert_error(r, 422, "conflicting_query")
    assert "output" in r.json()["error"]["message"]
    assert_error(client.get("/v1/drift?window=5&window=9"), 422, "conflicting_query")


def test_not_an_image_is_415(client: TestClient) -> None:
    assert_error(upload(client, b"%PDF-1.4 definitely not a photo" * 10), 415, "not_an_image")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_415(client: TestClient, fmt: str) -> None:
    assert_error(upload(client, encoded(fmt)), 415, "unsupported_format")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_is_400(client: TestClient, fmt: str) -> None:
    data = encoded(fmt, (64, 64)) if fmt != "JPEG" else make_photo(64, 64)
    assert_error(upload(client, data[: len(data) // 2]), 400, "invalid_image")


def test_empty_file_is_400(client: TestClient) -> None:
    assert_error(upload(client, b""), 400, "empty_file")


def test_declared_body_over_limit_is_413(client: TestClient) -> None:
    r = upload(client, b"\xff\xd8" + bytes(400_000))
    assert_error(r, 413, "payload_too_large")


def test_streamed_body_over_limit_is_413_before_the_end(client: TestClient) -> None:
    """A chunked body (no Content-Length) is cut off once past the limit.

    Driven through raw ASGI: TestClient would read the whole body before the app sees it.
    """
    import asyncio

    app = client.app
    pulled = {"chunks": 0}
    sent: list[dict[str, Any]] = []
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'

    async def receive() -> dict[str, Any]:
        pulled["chunks"] += 1
        if pulled["chunks"] == 1:
            return {"type": "http.request", "body": head, "more_body": True}
        return {"type": "http.request", "body": bytes(65536), "more_body": True}  # endless

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/segment", "raw_path": b"/v1/segment",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "app": app,
        "headers": [(b"content-type", b"multipart/form-data; boundary=b")],
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert sent[0]["status"] == 413
    assert b"payload_too_large" in sent[1]["body"]
    assert pulled["chunks"] <= 0.25 * 1024 * 1024 / 65536 + 2  # stopped just past the limit


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_over_pixel_limit_is_413(client: TestClient) -> None:
    bomb = png_bomb(600, 600)  # 360 kpx > 250 kpx, in a few hundred bytes
    assert len(bomb) < 10_000
    assert_error(upload(client, bomb, "bomb.png"), 413, "image_too_large")


def test_decompression_bomb_far_over_pillow_limit_is_413(client: TestClient) -> None:
    bomb = png_bomb(3000, 3000)  # 9 Mpx, over twice the limit: Pillow refuses to open it
    assert_error(upload(client, bomb, "bomb.png"), 413, "image_too_large")


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.get("/v1/segment"), 405, "method_not_allowed")
    assert_error(client.get("/static/../../etc/passwd"), 404)


def test_no_client_input_reached_the_500_handler(client: TestClient) -> None:
    metrics = client.get("/metrics").text
    assert 'status="413"' in metrics
    assert 'status="415"' in metrics
    assert 'status="500"' not in metrics


def test_decode_applies_exif_orientation() -> None:
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue(), 10_000).shape == (40, 20, 3)


def test_decode_converts_grey_and_alpha_to_rgb() -> None:
    for mode in ("L", "RGBA", "P", "LA", "I;16"):
        buf = io.BytesIO()
        Image.new(mode, (8, 6)).save(buf, format="PNG")
        out = decode_image(buf.getvalue(), 10_000)
        assert out.shape == (6, 8, 3)
        assert out.dtype == np.uint8


def test_decode_refuses_with_client_errors_only() -> None:
    """Randomly corrupted JPEGs decode or raise a ClientError with a 4xx status, nothing else."""
    rng = np.random.default_rng(0)
    statuses = set()
    for _ in range(200):
        data = bytearray(make_photo(32, 32))
        for i in rng.integers(0, len(data), size=8):
            data[i] = int(rng.integers(0, 256))
        try:
            decode_image(bytes(data), 10_000)
            decode_photo(bytes(data), 10_000, min_side=16)  # the reduced-scale JPEG path
            statuses.add(200)
        except ClientError as exc:
            statuses.add(exc.status)
    assert statuses <= {200, 400, 413, 415}


@pytest.fixture(scope="module")
def keyed(
    serve_models: ServeModels,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CMI_TEST_SERVE_KEY", KEY)
        settings = ServeSettings(
            model=serve_models.onnx,
            log_dir=str(tmp_path_factory.mktemp("key_log")),
            api_key_env="CMI_TEST_SERVE_KEY",
        )
        app = create_app(settings)
    with TestClient(app) as c:
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield c


def test_api_key_guards_every_v1_route(keyed: TestClient) -> None:
    photo = {"file": ("a.jpg", make_photo(), "image/jpeg")}
    for method, path in (("GET", "/v1/model"), ("POST", "/v1/segment")):
        r = keyed.request(method, path, files=photo if method == "POST" else None)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    r = keyed.post("/v1/segment/batch", files=[("files", photo["file"])])
    assert_error(r, 401)
    assert_error(keyed.get("/v1/model", headers={"X-API-Key": KEY + "x"}), 401)
    assert_error(keyed.get("/v1/model", headers={"Authorization": "Basic " + KEY}), 401)
    assert keyed.get("/v1/model", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    r = keyed.post("/v1/segment", files=photo, headers={"X-API-Key": KEY})
    assert r.status_code == 200


def test_health_metrics_and_page_stay_open(keyed: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js"):
        assert keyed.get(path).status_code == 200, path


def test_missing_key_variable_is_a_clear_error(
    serve_models: ServeModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cmi_cli.errors import UsageError
    from cmi_cli.serving.settings import load_settings

    monkeypatch.delenv("CMI_NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(UsageError, match="CMI_NOT_SET_ANYWHERE"):
        load_settings(model=serve_models.onnx, api_key_env="CMI_NOT_SET_ANYWHERE")
