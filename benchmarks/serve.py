"""Throughput and latency of `cmi serve` against ONNX Runtime in-process, in one run.

Steps:

1. The model: ``--model M.onnx``, or the default architecture (fast_unet, width 16, 256 px,
   104 classes, untrained: speed does not depend on the weights) saved as a checkpoint and put
   through the real ``export_onnx``.
2. In-process: ONNX Runtime alone on preprocessed 256 px inputs (one call at a time on all
   cores, and one single-threaded call per core; the better counts), and the whole in-process
   pipeline (decode a 640x480 JPEG, preprocess, infer, post-process, image features) -- images
   per second over ``--seconds``, measured before and after step 3 (the faster counts).
3. The service: ``cmi serve`` in a subprocess (access log off, prediction log on), driven by
   1, 8 and 32 concurrent clients that send pre-encoded multipart bodies (so the client costs
   little CPU) for ``--seconds`` each: throughput, p50 and p99 latency, errors. Then again with
   micro-batching (``--batch-size 8 --batch-wait-ms 5``).

Goal: at 8 clients the service delivers >= 80% of ONNX Runtime's in-process throughput, with no
errors at 32 clients. Clients and server share the machine, so the ratio is pessimistic.

    python benchmarks/serve.py [--model M.onnx] [--seconds 10] [--out results/benchmarks]
                               [--config "LABEL=cmi serve flags" ...] [--no-batching]
    python benchmarks/serve.py make-model OUT.onnx [--image-size 256] [--width 16]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
# CPU milliseconds per image: unlike throughput, barely moved by other processes' load.
CPU_MS: dict[str, float] = {}


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_model(out: Path, image_size: int = 256, width: int = 16, seed: int = 0) -> Path:
    """Export an untrained model of the default architecture with the real exporter."""
    import torch

    from cmi_cli.classes import foodseg103_class_names
    from cmi_cli.export.onnx_export import export_onnx
    from cmi_cli.lineage import make_lineage
    from cmi_cli.models.registry import build_model, model_spec

    torch.manual_seed(seed)
    names = list(foodseg103_class_names())
    net = build_model("fast_unet", len(names), width=width).eval()
    pre = {
        "image_size": image_size, "resize": "bilinear", "channel_order": "RGB",
        "input_layout": "NCHW", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "mask_resize": "nearest",
    }  # fmt: skip
    lineage = make_lineage(
        kind="checkpoint", class_names=names, preprocessing=pre, model=model_spec(net),
        config={}, data={"root": "none"}, metrics={},
    )  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "untrained.ckpt"
        state = {f"net.{k}": v for k, v in net.state_dict().items()}
        torch.save({"state_dict": state, "cmi_lineage": lineage}, ckpt)
        export_onnx(ckpt, out, num_images=1)
    return out


def synthetic_jpegs(count: int = 8) -> list[bytes]:
    sys.path.insert(0, str(ROOT))
    from locustfile import synthetic_photos

    return synthetic_photos(count)


def rate(fn: Any, seconds: float) -> float:
    """Calls per second of ``fn`` over ``seconds`` (after two warm-up calls)."""
    fn()
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def in_process(model: Path, photos: list[bytes], seconds: float) -> dict[str, float]:
    import numpy as np

    from cmi_cli.serving.metrics import ServeMetrics
    from cmi_cli.serving.predictor import ServedModel
    from cmi_cli.serving.service import SegmentService
    from cmi_cli.serving.settings import available_cores, load_settings

    settings = load_settings(model=model, log_predictions=False)
    served = ServedModel.load(model, "onnx", available_cores())
    x = np.stack([served.preprocess(np.zeros((480, 640, 3), np.uint8))])
    ort_rate = rate(lambda: served.backend.predict(x), seconds)
    ort_parallel = parallel_rate(model, x, available_cores(), seconds)
    ort_cpu_ms = CPU_MS["ort"]
    service = SegmentService(served, settings, ServeMetrics(), None)
    it = iter(range(10**9))
    pipeline = rate(lambda: service.process_one(photos[next(it) % len(photos)], None), seconds)
    service.close()
    return {
        "ort_images_per_s": max(ort_rate, ort_parallel),
        "ort_one_stream_all_cores": ort_rate,
        "ort_streams_one_thread_each": ort_parallel,
        "pipeline_images_per_s": pipeline,
        "ort_cpu_ms_per_image": ort_cpu_ms,
    }


def parallel_rate(model: Path, x: Any, streams: int, seconds: float) -> float:
    """ONNX Runtime with one intra-op thread per call and ``streams`` calls at once."""
    from cmi_cli.export.ort_predict import OnnxPredictor

    predictor = OnnxPredictor(model, threads=1)
    predictor.predict(x)
    counts = [0] * streams
    stop = time.perf_counter() + seconds

    def work(k: int) -> None:
        while time.perf_counter() < stop:
            predictor.predict(x)
            counts[k] += 1

    start, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    CPU_MS["ort"] = 1000 * (time.process_time() - cpu) / max(1, sum(counts))
    return sum(counts) / (time.perf_counter() - start)


def multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + photo + f"\r\n--{boundary}--\r\n".encode(), boundary


def drive(
    url: str, bodies: list[tuple[bytes, str]], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` threads posting back to back for ``seconds``."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as http:
            i = k
            while time.perf_counter() < stop:
                body, boundary = bodies[i % len(bodies)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = http.post(
                        f"{url}/v1/segment",
                        content=body,
                        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
                    )
                    key = None if r.status_code == 200 else str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                with lock:
                    if key is None:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors[key] = errors.get(key, 0) + 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = sorted(latencies) or [float("nan")]
    return {
        "clients": clients,
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "ok": len(latencies),
        "errors": errors,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_drive(
    model: Path, photos: list[bytes], seconds: float, extra: list[str], log_dir: Path
) -> list[dict[str, Any]]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "cmi_cli", "-q", "serve", str(model), "--port", str(port),
           "--no-access-log", "--log-dir", str(log_dir), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cmi serve did not start: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        bodies = [multipart(p) for p in photos]
        drive(url, bodies, 2, 2)  # warm-up
        rows = []
        for clients in CONCURRENCY:
            cpu = process_cpu_s(proc.pid)
            row = drive(url, bodies, clients, seconds)
            after = process_cpu_s(proc.pid)
            if cpu is not None and after is not None and row["ok"]:
                row["server_cpu_ms_per_image"] = 1000 * (after - cpu) / row["ok"]
            rows.append(row)
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def report(result: dict[str, Any]) -> str:
    ort = result["in_process"]["ort_images_per_s"]
    cpu_ms = result["in_process"]["ort_cpu_ms_per_image"]
    lines = [
        f"model {result['model']}  cores {result['cores']}  {result['seconds']} s per level",
        f"in-process ONNX Runtime: {result['in_process']['ort_one_stream_all_cores']:.1f} img/s "
        f"(one call at a time, all cores), "
        f"{result['in_process']['ort_streams_one_thread_each']:.1f} img/s (one call per core, "
        f"one thread each); the ratio below is against the better, {ort:.1f} img/s",
        f"in-process whole pipeline (decode, preprocess, infer, post-process, features): "
        f"{result['in_process']['pipeline_images_per_s']:.1f} img/s",
        "",
        f"ONNX Runtime in-process CPU per image: {cpu_ms:.0f} ms (one thread per call)",
        "",
        "| service | clients | img/s | vs ORT in-process | p50 ms | p99 ms | errors "
        "| server CPU ms/img | CPU efficiency |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, rows in result["service"].items():
        for row in rows:
            lines.append(
                f"| {label} | {row['clients']} | {row['images_per_s']:.1f} | "
                f"{100 * row['images_per_s'] / ort:.0f}% | {row['p50_ms']:.0f} | "
                f"{row['p99_ms']:.0f} | {sum(row['errors'].values()) or 0} | "
                f"{row.get('server_cpu_ms_per_image', float('nan')):.0f} | "
                f"{100 * cpu_ms / row.get('server_cpu_ms_per_image', float('nan')):.0f}% |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "make-model"])
    parser.add_argument("path", nargs="?", help="make-model: where to write the ONNX model")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--no-batching", action="store_true", help="skip the micro-batching run")
    parser.add_argument(
        "--config", action="append", metavar="LABEL=FLAGS",
        help='another server configuration, e.g. "1 thread=--threads 1 --max-concurrency 2"',
    )  # fmt: skip
    args = parser.parse_args()
    if args.command == "make-model":
        if not args.path:
            parser.error("make-model needs an output path")
        print(make_model(Path(args.path), args.image_size, args.width))
        return

    from cmi_cli.serving.settings import available_cores

    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or make_model(args.out / "serve-bench.onnx", args.image_size, args.width)
    photos = synthetic_jpegs()
    before = in_process(model, photos, args.seconds)
    result: dict[str, Any] = {
        "model": str(model), "cores": available_cores(), "seconds": args.seconds, "service": {},
    }  # fmt: skip
    configs: dict[str, list[str]] = {"default": []}
    for option in args.config or []:
        label, _, flags = option.partition("=")
        configs[label] = flags.split()
    if not args.no_batching:
        configs["micro-batch 8/5ms"] = ["--batch-size", "8", "--batch-wait-ms", "5"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in configs.items():
            log_dir = Path(tmp) / label.replace(" ", "_").replace("/", "_")
            result["service"][label] = serve_and_drive(model, photos, args.seconds, extra, log_dir)
    # Measured before and after the service, keeping the faster: the machine's load may change
    # during the run, and the better in-process figure makes the service's ratio conservative.
    after = in_process(model, photos, args.seconds)
    result["in_process"] = {k: max(before[k], after[k]) for k in before}
    result["in_process"]["ort_cpu_ms_per_image"] = min(
        before["ort_cpu_ms_per_image"], after["ort_cpu_ms_per_image"]
    )
    result["in_process_runs"] = [before, after]
    (args.out / "serve.json").write_text(json.dumps(result, indent=2))
    print(report(result))
    at8 = result["service"]["default"][1]["images_per_s"]
    print(f"\nat 8 clients: {100 * at8 / result['in_process']['ort_images_per_s']:.0f}% of "
          f"in-process ONNX Runtime (goal >= 80%); errors at 32: "
          f"{result['service']['default'][2]['errors'] or 'none'}")  # fmt: skip


if __name__ == "__main__":
    main()
