"""A real `cmi serve` attacked on purpose: slow clients, malformed HTTP, huge PNGs, signals.

Each test talks to a subprocess over real sockets (raw ones where a well-behaved client could
not make the fault happen) and measures what matters: seconds until a slow client is dropped,
peak memory of the server, seconds from a signal to the exit.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _serve_helpers import LiveServer, ServeModels, make_photo
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float = 15) -> tuple[bytes, float]:
    """Read everything until the server closes; return it and the seconds it took."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open {limit_s} s") from None
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def multipart(photo: bytes, boundary: str = "cmiboundary") -> tuple[bytes, bytes]:
    """Return (headers block, body) of a multipart POST /v1/segment."""
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        "POST /v1/segment HTTP/1.1\r\nHost: t\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def test_slow_clients_are_dropped_in_seconds_and_others_served(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(
        serve_models.onnx,
        ["--no-access-log"],
        CMI_BODY_TIMEOUT_S="1.5",
        CMI_HEADER_TIMEOUT_S="1.5",
    )
    head, body = multipart(make_photo(64, 48))
    stalled_body = connect(server)  # headers, then half the body, then nothing
    stalled_body.sendall(head + body[: len(body) // 2])
    stalled_headers = connect(server)  # half a header block, then nothing
    stalled_headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
    silent = connect(server)  # connects and never sends a byte
    results: dict[str, tuple[bytes, float]] = {}

    def watch(name: str, sock: socket.socket) -> None:
        results[name] = read_until_closed(sock)

    watchers = [
        threading.Thread(target=watch, args=(name, sock))
        for name, sock in (("body", stalled_body), ("headers", stalled_headers), ("idle", silent))
    ]
    for w in watchers:
        w.start()
    # Meanwhile the server answers everyone else.
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    r = httpx.post(
        f"{server.url}/v1/segment", files={"file": ("p.jpg", make_photo(), "image/jpeg")}
    )
    assert r.status_code == 200
    for w in watchers:
        w.join(20)
    for sock in (stalled_body, stalled_headers, silent):
        sock.close()

    raw, seconds = results["body"]
    status, headers, payload = split_response(raw)
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert json.loads(payload)["error"]["code"] == "request_timeout"
    print(f"slow-client drop: body {seconds:.2f} s", end=" ")
    assert seconds < 1.5 + 2.5
    for name in ("headers", "idle"):
        raw, seconds = results[name]
        assert raw == b""  # no request to answer: the connection is just closed
        print(f"{name} {seconds:.2f} s", end=" ")
        assert seconds < 1.5 + 2.5
    assert "Traceback" not in server.logs()


def test_malformed_http_is_answered_in_the_json_error_shape(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(serve_models.onnx, ["--no-access-log", "--max-connections", "3"])
    cases = {
        "garbage": (b"BLAH BLAH\r\n\r\n", 400),
        "content-length": (
            b"POST /v1/segment HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
            400,
        ),
        "header block": (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
            431,
        ),
    }
    for name, (request, expected) in cases.items():
        sock = connect(server)
        sock.sendall(request)
        raw, _ = read_until_closed(sock)
        sock.close()
        status, headers, payload = split_response(raw)
        assert status == expected, (name, raw[:300])
        assert headers["content-type"] == "application/json", (name, raw[:300])
        assert set(json.loads(payload)["error"]) == {"code", "message"}, name
    # A multipart body the parser cannot read reaches the app: JSON as well.
    r = httpx.post(
        f"{server.url}/v1/segment",
        content=b"--x\r\nnot a part",
        headers={"Content-Type": "multipart/form-data"},
    )
    assert r.status_code in (400, 422)
    assert set(r.json()["error"]) == {"code", "message"}

    # Over the connection cap: 503 with Retry-After, in JSON, at once.
    held = [connect(server) for _ in range(3)]
    time.sleep(0.2)
    extra = connect(server)
    raw, seconds = read_until_closed(extra)
    status, headers, payload = split_response(raw)
    assert status == 503
    assert headers["retry-after"] == "1"
    assert json.loads(payload)["error"]["code"] == "too_many_connections"
    assert seconds < 1
    for sock in [*held, extra]:
        sock.close()


def big_png(side: int = 6000) -> bytes:
    """A 6000x6000 PNG of a plate: 36 megapixels, a few tens of KB on the wire."""
    img = Image.new("RGB", (side, side), (200, 190, 170))
    ImageDraw.Draw(img).ellipse((side // 5, side // 5, side * 4 // 5, side * 4 // 5), (190, 90, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


MEMORY_BOUND_MB = 1200


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_ten_huge_pngs_at_once_stay_under_the_memory_bound(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    """The photo is inside the pixel limit; what it costs is bounded by max_output_pixels."""
    server = live_server(
        serve_models.onnx,
        ["--no-access-log", "--max-pixels", "40000000"],
        CMI_MAX_OUTPUT_PIXELS="4000000",
    )
    png = big_png()
    assert len(png) < 200_000
    before = peak_rss_mb(server.process.pid)
    outputs = ["overlay", "mask", "json"] * 3 + ["overlay"]

    def send(output: str) -> httpx.Response:
        params = {"output": output} if output != "json" else {"overlay": "true"}
        return httpx.post(
            f"{server.url}/v1/segment",
            params=params,
            files={"file": ("big.png", png, "image/png")},
            timeout=180,
        )

    start = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(send, outputs))
    seconds = time.monotonic() - start
    peak = peak_rss_mb(server.process.pid)
    print(f"peak RSS {peak:.0f} MB (idle {before:.0f} MB), 10 answers in {seconds:.1f} s", end=" ")
    for output, r in zip(outputs, answers, strict=True):
        assert r.status_code == 200, r.text[:300]
        if output == "json":
            body = r.json()
            assert body["image"] == {"width": 6000, "height": 6000}
            assert body["output"] == {"width": 2000, "height": 2000}
        else:
            assert r.headers["X-Output-Size"] == "2000x2000"
            assert Image.open(io.BytesIO(r.content)).size == (2000, 2000)
    assert peak < MEMORY_BOUND_MB


def test_the_default_pixel_limit_refuses_a_36_megapixel_photo(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(serve_models.onnx, ["--no-access-log"])
    r = httpx.post(f"{server.url}/v1/segment", files={"file": ("b.png", big_png(), "image/png")})
    assert r.status_code == 413
    assert "25000000" in r.json()["error"]["message"]


def test_sigterm_finishes_the_request_in_flight_logs_it_and_exits_promptly(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    from cmi_cli.serving.store import read_predictions

    server = live_server(serve_models.onnx, ["--no-access-log"], CMI_SHUTDOWN_GRACE_S="5")
    head, body = multipart(make_photo(96, 64, seed=3))
    sock = connect(server)
    sock.sendall(head + body[:100])  # the request is in flight: its body still coming
    time.sleep(0.3)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    sock.sendall(body[100:])
    raw, _ = read_until_closed(sock)
    sock.close()
    status, _, payload = split_response(raw)
    assert status == 200, raw[:300]
    request_id = json.loads(payload)["request_id"]
    server.process.wait(timeout=15)
    busy_exit = time.monotonic() - signalled
    assert busy_exit < 0.5 + 2.0  # the answer, then out: not the whole grace period
    logged = [r["request_id"] for r in read_predictions(server.log_dir)]
    assert logged == [request_id]
    print(f"exit {busy_exit:.2f} s after SIGTERM with a request in flight", end=" ")


def test_sigterm_exits_within_the_grace_period_while_drift_computes(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(
        serve_models.onnx,
        ["--no-access-log"],
        CMI_SHUTDOWN_GRACE_S="1",
        CMI_DRIFT_MIN_SAMPLES="2",
        CMI_DRIFT_INTERVAL_S="0",
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for seed in range(6):
            client.post("/v1/segment", files={"file": ("p.jpg", make_photo(seed=seed))})

        def drift() -> None:  # the first report imports Evidently: seconds of work
            with contextlib.suppress(httpx.HTTPError):
                client.get("/v1/drift", params={"format": "html"})

        worker = threading.Thread(target=drift)
        worker.start()
        time.sleep(0.5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        seconds = time.monotonic() - signalled
        worker.join(30)
    print(f"exit {seconds:.2f} s after SIGTERM during a drift report", end=" ")
    assert seconds < 1 + 1.5


def test_parallel_drift_requests_for_one_window_compute_once(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(
        serve_models.onnx,
        ["--no-access-log"],
        CMI_DRIFT_MIN_SAMPLES="2",
        CMI_DRIFT_INTERVAL_S="0",
    )
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for seed in range(8):
            client.post("/v1/segment", files={"file": ("p.jpg", make_photo(seed=seed))})

        def drift(window: int) -> httpx.Response:
            return client.get("/v1/drift", params={"window": window})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(drift, [6] * 8))
        assert [r.status_code for r in answers] == [200] * 8
        assert len({r.json()["created_at"] for r in answers}) == 1  # one report, shared
        metrics = client.get("/metrics").text
        assert "cmi_drift_computations_total 1.0" in metrics
        report = answers[0].json()
        assert not report["reference"].startswith("/")  # no server path
        # Which reference: its file beside the model, and the data it was made from.
        assert report["reference"].startswith("model.reference.csv (")
        assert "'train' split" in report["reference"]

        # Every slot busy with another window: 503 with Retry-After, not a queue.
        with ThreadPoolExecutor(2) as pool:
            busy = list(pool.map(drift, [3, 4]))
        codes = sorted(r.status_code for r in busy)
        assert codes == [200, 503], [r.text[:200] for r in busy]
        refused = next(r for r in busy if r.status_code == 503)
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "drift_busy"
    assert "RuntimeWarning" not in server.logs()
