"""Throughput of ``cmi predict`` at 1 and 2 workers, side by side in one run.

Photos (synthetic plates, 640x480 JPEG by default) are predicted with the default outputs
(masks, overlays, table) by 1 worker and by 2 workers, as processes and as threads; the
configurations take turns for ``--repeats`` rounds so machine noise hits all alike, and the
median images/s of each is printed with the ratio of 2 workers to 1. A run's time includes
starting its workers and loading their models, as a user's run does.

Without ``--model``, an untrained ``fast_unet`` (104 classes, 256 px, the default
architecture) is exported to ONNX: speed does not depend on the weights.

    python benchmarks/predict_throughput.py [--model M.onnx] [--photos 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np


def make_model(path: Path, size: int) -> Path:
    import onnx

    from cmi_cli.classes import foodseg103_class_names
    from cmi_cli.export.metadata import write_lineage
    from cmi_cli.export.onnx_export import _trace_to_onnx
    from cmi_cli.models.registry import build_model

    names = list(foodseg103_class_names())
    model = build_model("fast_unet", len(names)).eval()
    _trace_to_onnx(model, path, opset=17, dynamic=True, height=size, width=size)
    proto = onnx.load(str(path))
    write_lineage(
        proto,
        {
            "kind": "onnx",
            "model": {"name": "fast_unet (untrained, for timing)"},
            "num_classes": len(names),
            "class_names": names,
            "preprocessing": {
                "image_size": size,
                "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225],
            },
        },
    )
    onnx.save(proto, str(path))
    return path


def make_photos(folder: Path, count: int, width: int, height: int) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(150, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            r = int(rng.integers(20, height // 3))
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        img.save(folder / f"{i:04d}.jpg", quality=90)


def run_once(model: Path, photos: Path, out: Path, workers: int, pool: str, batch: int) -> float:
    from cmi_cli.predict.runner import PredictSettings, predict

    shutil.rmtree(out, ignore_errors=True)
    result = predict(
        PredictSettings(
            model=model,
            sources=[str(photos)],
            out=out,
            batch_size=batch,
            workers=workers,
            pool=pool,
            show_progress=False,
        )
    )
    assert not result.errors, result.errors[:3]
    return result.images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="An ONNX model (default: untrained fast_unet)")
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--size", type=int, default=256, help="Model input size (own model)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cmi-predict-bench-") as tmp:
        root = Path(tmp)
        model = args.model or make_model(root / "model.onnx", args.size)
        make_photos(root / "photos", args.photos, args.width, args.height)
        configs = [(1, "process"), (2, "process"), (2, "thread")]
        rates: dict[tuple[int, str], list[float]] = {c: [] for c in configs}
        run_once(model, root / "photos", root / "warm", 1, "process", args.batch_size)
        for _ in range(args.repeats):
            for workers, pool in configs:
                out = root / f"out-{workers}-{pool}"
                rates[(workers, pool)].append(
                    run_once(model, root / "photos", out, workers, pool, args.batch_size)
                )
        print(
            f"cmi predict: {args.photos} photos {args.width}x{args.height} JPEG, model input "
            f"{args.size}, batch {args.batch_size}, masks+overlays+table, {os.cpu_count()} "
            f"logical CPUs, load {os.getloadavg()[0]:.2f}, median of {args.repeats}"
        )
        one = statistics.median(rates[(1, "process")])
        for (workers, pool), values in rates.items():
            median = statistics.median(values)
            label = "1 worker" if workers == 1 else f"{workers} workers ({pool} pool)"
            print(
                f"  {label:<26} {median:7.2f} images/s  x{median / one:4.2f}   "
                f"(runs: {', '.join(f'{v:.2f}' for v in values)})"
            )


if __name__ == "__main__":
    main()
