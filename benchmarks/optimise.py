"""What each optimisation knob gains on this machine, measured side by side (not a test).

    python benchmarks/optimise.py MODEL.ckpt [--size 256] [--repeats 15] [--out DIR]

Exports the checkpoint to ONNX, then times, interleaved and after warm-up, at batch 1 and 8:
eager PyTorch in NCHW and channels_last with 1 and all threads; ONNX Runtime at each graph
optimisation level; static int8 with uint8 and int8 activations (int8 weights), per-tensor
and per-channel; dynamic int8; and the original project's MiniUNet in eager PyTorch. Prints
median milliseconds per image and ratios, the served default (static u8s8 int8 ONNX) against
MiniUNet at batch 1, the fp32 and int8 GEMM peaks (median and spread of interleaved rounds)
with each ONNX row's share of its own format's peak, and writes ``optimise.json``. Run it from
the project folder (the data path in the lineage is relative).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _timer(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Measure and print."""
    import torch

    from cmi_cli.export.onnx_export import export_onnx
    from cmi_cli.export.ort_predict import OnnxPredictor
    from cmi_cli.export.peaks import measure_peaks, precision_of
    from cmi_cli.export.quantize import QuantizeSettings, quantize_onnx
    from cmi_cli.export.timing import torch_forward
    from cmi_cli.models.complexity import count_flops
    from cmi_cli.models.registry import build_model
    from cmi_cli.training.checkpoint import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("optimise"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(args.checkpoint, args.out / "model.onnx").path
    variants = {
        "u8s8": QuantizeSettings(calib_size=16),
        "s8s8": QuantizeSettings(calib_size=16, activation_type="int8"),
        "u8s8-per-channel": QuantizeSettings(calib_size=16, per_channel=True),
        "dynamic": QuantizeSettings(mode="dynamic"),
    }
    quantized = {}
    for name, settings in variants.items():
        done = quantize_onnx(fp32, args.out / f"model.{name}.onnx", settings, max_miou_drop=1.0)
        quantized[name] = done.path
        drop = f"mIoU {done.fp32.miou:.4f} -> {done.int8.miou:.4f}"
        print(f"{name}: {drop}, agreement {done.pixel_agreement:.4f}")

    all_threads = torch.get_num_threads()
    runs: dict[str, Callable[[np.ndarray], object]] = {}
    for layout in ("nchw", "channels_last"):
        model, _ = load_model(args.checkpoint)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        model.to(memory_format=fmt)

        def eager(x: np.ndarray, model=model, fmt=fmt) -> object:  # type: ignore[no-untyped-def]
            with torch.inference_mode():
                return model(torch.from_numpy(x).contiguous(memory_format=fmt))

        runs[f"torch {layout}"] = eager
    # The original project's model, as it ran: eager PyTorch fp32 (fresh weights: speed only).
    trained, lineage = load_model(args.checkpoint)
    original = build_model("mini_unet", int(lineage["num_classes"])).eval()
    runs["torch mini_unet (original)"] = torch_forward(original)
    for level in ("disable", "basic", "extended", "all"):
        runs[f"ort fp32 {level}"] = OnnxPredictor(fp32, graph_optimization_level=level).predict
    for name, path in quantized.items():
        runs[f"ort int8 {name}"] = OnnxPredictor(path).predict

    results: dict[str, dict[str, float]] = {}
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, 3, args.size, args.size))
            x = x.astype(np.float32)
            active = {
                k: v for k, v in runs.items() if k.startswith("torch") or threads == all_threads
            }
            for fn in active.values():
                fn(x)
                fn(x)
            times: dict[str, list[float]] = {k: [] for k in active}
            for _ in range(args.repeats):
                for key, fn in active.items():
                    times[key].append(_timer(lambda fn=fn, x=x: fn(x)))  # type: ignore[misc]
            for key, t in times.items():
                label = f"{key} ({threads} thr)" if key.startswith("torch") else key
                results.setdefault(label, {})[f"batch{batch}"] = statistics.median(t) / batch * 1000
    base = results[f"torch nchw ({all_threads} thr)"]
    print(f"\nms per image at {args.size}px, median of {args.repeats}; load {os.getloadavg()}")
    print(f"{'variant':34} {'b1 ms':>9} {'b8 ms':>9} {'vs NCHW b1':>11} {'vs NCHW b8':>11}")
    for key, r in results.items():
        print(
            f"{key:34} {r['batch1']:9.2f} {r['batch8']:9.2f} "
            f"{base['batch1'] / r['batch1']:10.2f}x {base['batch8'] / r['batch8']:10.2f}x"
        )
    served = results["ort int8 u8s8"]["batch1"]
    first = results[f"torch mini_unet (original) ({all_threads} thr)"]["batch1"]
    ratio = first / served
    print(
        f"\nserved default (int8 ONNX, u8s8) vs the original MiniUNet in eager PyTorch at "
        f"{args.size}x{args.size}, batch 1: {served:.2f} vs {first:.2f} ms = {ratio:.2f}x"
    )
    peaks = measure_peaks()  # ONNX Runtime's default threads, as the sessions above
    flops = count_flops(trained, (1, 3, args.size, args.size))
    for peak in peaks.values():
        print(f"{peak.precision} GEMM peak {peak.describe()}")
    shares = {}
    for key, r in results.items():
        if key.startswith("ort"):
            peak = peaks[precision_of(key)]
            shares[key] = round(100 * flops / (r["batch1"] / 1000) / 1e9 / peak.gops, 1)
            print(f"{key:34} {shares[key]:5.1f}% of the {peak.precision} peak (batch 1)")
    sizes = {p.name: round(p.stat().st_size / 1e6, 3) for p in [fp32, *quantized.values()]}
    record = {
        "size": args.size,
        "ms_per_image": results,
        "file_mb": sizes,
        "served_vs_miniunet_batch1": round(ratio, 2),
        "peaks": {k: p.to_dict() for k, p in peaks.items()},
        "peak_pct_batch1": shares,
    }
    (args.out / "optimise.json").write_text(json.dumps(record, indent=2))
    print(f"sizes MB: {sizes}")


if __name__ == "__main__":
    main()
