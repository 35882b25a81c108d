"""The prediction log: complete under concurrency, readable, and uploadable to a bucket."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from _serve_helpers import LiveServer, ServeModels, make_photo

from cmi_cli.serving.store import (
    GcsJsonlSink,
    PredictionLog,
    SqliteSink,
    open_prediction_log,
    read_predictions,
)


def record(i: int, ts: float | None = None) -> dict[str, Any]:
    return {
        "ts": ts if ts is not None else time.time(),
        "model_id": "m-1",
        "request_id": f"r{i}",
        "latency_ms": 1.0 + i,
        "inference_ms": 0.5,
        "width": 10,
        "height": 20,
        "mean_confidence": 0.5,
        "p10_confidence": 0.1,
        "mean_entropy": 1.2,
        "image_features": {"brightness": 0.4, "sharpness": 12.0},
        "class_shares": {"background": 0.75, "rice": 0.25},
    }


def test_concurrent_appends_are_all_written(tmp_path: Path) -> None:
    log = open_prediction_log(str(tmp_path))

    def write(t: int) -> None:
        for i in range(50):
            log.append(record(t * 1000 + i))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    rows = read_predictions(tmp_path)
    assert len(rows) == 400
    assert len({r["request_id"] for r in rows}) == 400
    assert rows[0]["class_shares"] == {"background": 0.75, "rice": 0.25}
    assert rows[0]["image_features"]["sharpness"] == 12.0


def test_read_window_and_since(tmp_path: Path) -> None:
    log = PredictionLog(SqliteSink(tmp_path))
    base = 1_700_000_000.0
    for i in range(10):
        log.append(record(i, ts=base + i))
    log.flush()
    assert [r["request_id"] for r in read_predictions(tmp_path, window=3)] == ["r7", "r8", "r9"]
    since = dt.datetime.fromtimestamp(base + 8, dt.timezone.utc)
    assert [r["request_id"] for r in read_predictions(tmp_path, since=since)] == ["r8", "r9"]
    assert read_predictions(tmp_path, since=base + 5, window=1)[0]["request_id"] == "r9"
    assert read_predictions(tmp_path)[0]["time"].startswith("2023-11-14T22:13:20")
    log.close()
    assert read_predictions(tmp_path / "nothing-here") == []


def test_a_failing_sink_is_counted_not_fatal(tmp_path: Path) -> None:
    class Broken:
        def write(self, records: list[dict[str, Any]]) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    lost: list[int] = []
    log = PredictionLog(Broken(), on_error=lost.append)
    log.append(record(0))
    log.append(record(1))
    log.close()
    assert sum(lost) == 2


class FakeBlob:
    def __init__(self, store: dict[str, tuple[str, str]], name: str) -> None:
        self.store, self.name = store, name

    def upload_from_string(self, data: str, content_type: str) -> None:
        self.store[self.name] = (data, content_type)


class FakeBucket:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[str, str]] = {}

    def blob(self, name: str) -> FakeBlob:
        return FakeBlob(self.objects, name)


class FakeClient:
    def __init__(self) -> None:
        self.buckets: dict[str, FakeBucket] = {}

    def bucket(self, name: str) -> FakeBucket:
        return self.buckets.setdefault(name, FakeBucket())


def test_gcs_sink_uploads_rotated_jsonl() -> None:
    client = FakeClient()
    sink = GcsJsonlSink("gs://my-bucket/serve/preds", client=client, rotate_records=4)
    log = PredictionLog(sink)
    for i in range(10):
        log.append(record(i))
    log.close()
    objects = client.buckets["my-bucket"].objects
    assert len(objects) == 3  # 4 + 4 uploaded when full, the last 2 on close
    names = sorted(objects)
    assert all(n.startswith("serve/preds/predictions-") and n.endswith(".jsonl") for n in names)
    lines = [json.loads(line) for n in names for line in objects[n][0].splitlines()]
    assert sorted(r["request_id"] for r in lines) == sorted(f"r{i}" for i in range(10))
    assert {ct for _, ct in objects.values()} == {"application/x-ndjson"}


def test_gcs_sink_rotates_by_age() -> None:
    client = FakeClient()
    sink = GcsJsonlSink("gs://b", client=client, rotate_records=1000, rotate_seconds=0)
    sink.write([record(0)])
    sink.write([record(1)])
    assert len(client.buckets["b"].objects) == 2


@pytest.mark.slow
def test_served_images_are_logged_exactly_once_under_load(
    serve_models: ServeModels, live_server: Callable[..., LiveServer]
) -> None:
    """50 concurrent requests from 16 threads: exactly 50 complete records."""
    server = live_server(serve_models.onnx, ["--no-access-log"])
    n = 50

    def call(i: int) -> str:
        files = {"file": (f"{i}.jpg", make_photo(40 + i % 7, 32, seed=i), "image/jpeg")}
        r = httpx.post(f"{server.url}/v1/segment", files=files, timeout=60)
        assert r.status_code == 200, r.text
        return str(r.json()["request_id"])

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(call, range(n)))
    model_id = httpx.get(f"{server.url}/v1/model").json()["id"]
    server.stop()  # a graceful stop flushes the log
    rows = read_predictions(server.log_dir)
    assert len(rows) == n
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    for row in rows:
        assert row["model_id"] == model_id
        assert row["width"] in range(40, 47)
        assert row["height"] == 32
        assert sum(row["class_shares"].values()) == pytest.approx(1.0)
        assert 0 < row["mean_confidence"] <= 1
        assert row["latency_ms"] >= row["inference_ms"]
        assert {"brightness", "contrast", "colourfulness", "sharpness"} <= set(
            row["image_features"]
        )
