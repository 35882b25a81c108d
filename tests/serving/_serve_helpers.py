"""Helpers of the serving tests (a unique module name: no clash with other test folders)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ServeModels:
    """A tiny trained checkpoint and its `cmi export onnx` export."""

    root: Path
    ckpt: Path
    onnx: Path


def make_photo(width: int = 120, height: int = 80, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A synthetic photo: a smooth gradient with a bright disc, encoded in ``fmt``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack(
        [xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), np.full_like(xx, 90)], -1
    ).astype(np.uint8)
    disc = (xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (min(width, height) / 3) ** 2
    img[disc] = rng.integers(150, 255, size=3, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A `cmi serve` subprocess on 127.0.0.1."""

    url: str
    process: subprocess.Popen[bytes]
    log_dir: Path
    output: Path

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM: the prediction log is flushed)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def logs(self) -> str:
        return self.output.read_text(errors="replace")


def start_server(
    model: Path | None, tmp: Path, args: list[str] | None = None, env: dict[str, str] | None = None
) -> LiveServer:
    """Start `python -m cmi_cli serve MODEL` on a free port and wait until /readyz is 200."""
    port = free_port()
    log_dir = tmp / "predictions"
    out = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "cmi_cli", "serve", *([str(model)] if model else [])]
    cmd += ["--port", str(port)]
    cmd += ["--log-dir", str(log_dir), *(args or [])]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CMI_")}
    full_env.update(env or {})
    with out.open("wb") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=full_env)
    server = LiveServer(f"http://127.0.0.1:{port}", proc, log_dir, out)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cmi serve exited {proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"cmi serve did not become ready:\n{server.logs()}")
