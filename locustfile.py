"""Load test of `cmi serve` with Locust (`nox -s loadtest`).

By hand:

    cmi serve model.onnx --no-access-log &
    locust -f locustfile.py --headless -u 10 -r 5 -t 20s --host http://127.0.0.1:8000 \
        --csv results/locust --html results/locust.html

Photos come from CMI_LOAD_IMAGES (a folder of JPEG/PNG/WebP files) or are synthesised.
CMI_LOAD_API_KEY is sent as X-API-Key when the server needs one. Any answer other than the
expected one counts as a failure, and Locust exits 1 on any failure.
"""

from __future__ import annotations

import io
import itertools
import os
import random
from pathlib import Path

import numpy as np
from locust import HttpUser, between, task
from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def synthetic_photos(count: int = 8, size: tuple[int, int] = (640, 480)) -> list[bytes]:
    """Phone-photo-sized JPEGs: smooth colour fields with a few discs (deterministic)."""
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(count):
        img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 120)], -1).astype(np.uint8)
        for _ in range(4):
            cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(30, 150)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def load_photos() -> list[tuple[str, bytes]]:
    """The photos to send: CMI_LOAD_IMAGES files, else synthetic ones."""
    folder = os.environ.get("CMI_LOAD_IMAGES")
    if folder:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in SUFFIXES)
        if files:
            return [(p.name, p.read_bytes()) for p in files[:64]]
    return [(f"synthetic-{i}.jpg", data) for i, data in enumerate(synthetic_photos())]


PHOTOS = load_photos()
_cycle = itertools.cycle(range(len(PHOTOS)))


class ServeUser(HttpUser):
    """A client that mostly segments photos, and sometimes asks about the model and health."""

    wait_time = between(0.05, 0.25)

    def on_start(self) -> None:
        """Send the API key, if one is given."""
        key = os.environ.get("CMI_LOAD_API_KEY")
        if key:
            self.client.headers["X-API-Key"] = key

    def _photo(self) -> tuple[str, bytes]:
        return PHOTOS[next(_cycle)]

    @task(10)
    def segment_json(self) -> None:
        """Segment a photo; fail unless 200 with classes."""
        name, data = self._photo()
        with self.client.post(
            "/v1/segment", files={"file": (name, data)}, name="/v1/segment", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
            elif not r.json().get("classes"):
                r.failure("no classes in the answer")

    @task(2)
    def segment_overlay(self) -> None:
        """Ask for the overlay JPEG."""
        name, data = self._photo()
        with self.client.post(
            "/v1/segment?output=overlay",
            files={"file": (name, data)},
            name="/v1/segment?output=overlay",
            catch_response=True,
        ) as r:
            if r.status_code != 200 or r.headers.get("content-type") != "image/jpeg":
                r.failure(f"status {r.status_code}, {r.headers.get('content-type')}")

    @task(1)
    def model(self) -> None:
        """Read the model description."""
        self.client.get("/v1/model")

    @task(1)
    def health(self) -> None:
        """Probe liveness or readiness."""
        self.client.get(random.choice(["/healthz", "/readyz"]))
