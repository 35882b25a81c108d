"""``cmi benchmark``: every format of one model side by side, measured in one run.

The story: check the checkpoint -> build each format (:mod:`cmi_cli.export.bench_formats`) ->
score each on the validation split -> time them all, with this CPU's fp32 and int8 GEMM peaks
(:mod:`cmi_cli.export.peaks`), in interleaved rounds (after a warm-up of each), so a burst of
load on a shared machine hits every format and both peaks alike -> one row per format and batch
size: status, size, mIoU, p50/p90 latency per image, throughput, speed-up over eager PyTorch,
achieved GFLOP/s and share of the peak of its own number format -> the served default (int8
ONNX) against the original project's MiniUNet in eager PyTorch at batch 1, as a ratio ->
:mod:`cmi_cli.export.bench_report` writes CSV, JSON and Markdown.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.console import err_console, is_quiet
from cmi_cli.errors import UsageError
from cmi_cli.export.bench_formats import FORMATS, BuildContext, Candidate, build, failed
from cmi_cli.export.bench_rows import BenchmarkResult, BenchmarkRow
from cmi_cli.export.peaks import Kernel, Peak, gemm_kernels, peaks_from_rates, precision_of, rate
from cmi_cli.export.timing import percentile, time_calls

# The headline ratio: what `cmi serve` runs by default against the project it grew from.
SERVED_DEFAULT = "onnx-int8"
ORIGINAL = "baseline"


@dataclass
class BenchmarkSettings:
    """What to measure and how."""

    formats: Sequence[str] = ("torch", "torch-compile", "onnx", "onnx-int8", "pruned", "baseline")
    batches: Sequence[int] = (1, 8)
    # None: the size the checkpoint was trained at (its lineage), as export and serving use.
    size: int | None = None
    repeats: int = 10
    warmup: int = 2
    ort_opt_level: str = "all"
    threads: int | None = None
    prune_ratio: float = 0.5
    prune_finetune_epochs: int = 2
    pruned_checkpoint: Path | None = None
    baseline_checkpoint: Path | None = None
    evaluate: bool = True
    eval_batch_size: int = 8

    def check(self) -> None:
        """Reject unknown formats and impossible sizes, naming the option."""
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise UsageError(
                f"unknown format(s) {', '.join(unknown) or '(none given)'}",
                hint=f"--formats takes a comma list of {', '.join(FORMATS)}",
            )
        if not self.batches or any(b < 1 for b in self.batches):
            raise UsageError("--batch sizes must be >= 1", hint="For example --batch 1,8")
        if self.size is not None and self.size < 8:
            raise UsageError(f"--size must be >= 8, got {self.size}")
        if self.repeats < 1 or self.warmup < 0:
            raise UsageError("--repeats must be >= 1 and --warmup >= 0")
        from cmi_cli.export.ort_predict import GRAPH_OPTIMIZATION_LEVELS

        if self.ort_opt_level not in GRAPH_OPTIMIZATION_LEVELS:
            raise UsageError(
                f"--ort-opt-level {self.ort_opt_level!r} is unknown",
                hint=f"Use one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}",
            )
        if not 0 < self.prune_ratio < 1:
            raise UsageError(f"--prune-ratio must be between 0 and 1, got {self.prune_ratio}")


def default_benchmark_dir(checkpoint: Path) -> Path:
    """``<run folder>/benchmark`` for ``<run>/checkpoints/x.ckpt``, else beside the file."""
    path = Path(checkpoint)
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return folder / "benchmark"


def machine_info(peaks: dict[str, Peak]) -> dict[str, Any]:
    """The facts a reader needs to compare numbers: CPU, threads, versions, load, peaks."""
    import platform

    import onnxruntime
    import torch

    from cmi_cli.export.timing import torch_runtime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_runtime": torch_runtime(),
        "matmul_peak_gflops": round(peaks["fp32"].gops, 1) if "fp32" in peaks else None,
        "int8_peak_gops": round(peaks["int8"].gops, 1) if "int8" in peaks else None,
        "peaks": {name: peak.to_dict() for name, peak in peaks.items()},
    }


def check_checkpoint(path: Path) -> dict[str, Any]:
    """Load the checkpoint once up front, so a bad input fails in one line before any work."""
    from cmi_cli.training.checkpoint import load_model

    _, lineage = load_model(Path(path))
    return lineage


def score(cand: Candidate, data_root: Path | None, batch_size: int) -> None:
    """Score a candidate on the validation split; on success it is ``validated``."""
    if cand.predict is None or cand.lineage is None or data_root is None:
        return
    from cmi_cli.training.evaluate import evaluate_predictor

    try:
        _, _, scores = evaluate_predictor(cand.predict, data_root, None, cand.lineage, batch_size)
    except Exception as exc:  # a format that cannot predict the split fails, the rest go on
        bad = failed(cand.name, exc)
        cand.status, cand.detail, cand.predict = bad.status, bad.detail, None
        return
    cand.extra["miou"] = float(scores.miou)
    cand.status = "validated"


def time_interleaved(
    cands: list[Candidate],
    batch: int,
    size: int,
    repeats: int,
    warmup: int,
    probes: dict[Kernel, Any] | None = None,
    rates: dict[Kernel, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each runnable candidate, taking turns call by call.

    ``probes`` (the peak GEMMs) take their turns in the same rounds, their rates appended to
    ``rates``: a peak measured beside the formats meets the same load they do.
    """
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    runnable = []
    for cand in cands:
        if cand.predict is None:
            continue
        try:
            time_calls(lambda c=cand: c.predict(x), repeats=0, warmup=max(1, warmup))  # type: ignore[misc]
        except Exception as exc:  # e.g. a recompile that fails at a new batch size
            bad = failed(cand.name, exc)
            cand.status, cand.detail, cand.predict = bad.status, bad.detail, None
            continue
        runnable.append(cand)
    times: dict[str, list[float]] = {c.name: [] for c in runnable}
    for _ in range(repeats):
        for cand in runnable:
            times[cand.name] += time_calls(lambda c=cand: c.predict(x), repeats=1, warmup=0)  # type: ignore[misc]
        for key, fn in (probes or {}).items():
            seconds = time_calls(fn, repeats=1, warmup=0)[0]
            if rates is not None:
                rates.setdefault(key, []).append(rate(key, seconds))
    return times


def make_rows(
    cands: list[Candidate],
    batch: int,
    times: dict[str, list[float]],
    peak: float | dict[str, float] | None = None,
) -> list[BenchmarkRow]:
    """Turn timings into rows; the speed-up is against ``torch`` (else the first format).

    ``peak`` is GOP/s by precision (``{"fp32": .., "int8": ..}``; one number for both): each
    row's share is of the peak of the number format it computes in.
    """
    peaks = peak if isinstance(peak, dict) else {"fp32": peak, "int8": peak}
    p50 = {name: percentile(t, 50) / batch for name, t in times.items()}
    reference = p50.get("torch") or next(iter(p50.values()), None)
    rows = []
    for cand in cands:
        row = BenchmarkRow(
            format=cand.name,
            batch=batch,
            status=cand.status,
            size_mb=cand.size_mb,
            miou=_round(cand.extra.get("miou")),
            gflops_per_image=_round(cand.flops_per_image and cand.flops_per_image / 1e9),
            prepare_s=cand.prepare_s,
            runtime=cand.runtime,
            layout=cand.layout,
            allocator=cand.allocator,
            path=str(cand.path or ""),
            detail=cand.detail,
        )
        if cand.name in times:
            t = times[cand.name]
            row.p50_ms = round(p50[cand.name] * 1000, 3)
            row.p90_ms = round(percentile(t, 90) / batch * 1000, 3)
            row.throughput = round(1 / p50[cand.name], 2)
            row.speedup = round(reference / p50[cand.name], 2) if reference else None
            if cand.flops_per_image:
                achieved = cand.flops_per_image / p50[cand.name] / 1e9
                row.gflops_per_s = round(achieved, 2)
                row.peak_of = precision_of(cand.name)
                own_peak = peaks.get(row.peak_of)
                if own_peak:
                    row.peak_pct = round(100 * achieved / own_peak, 1)
        rows.append(row)
    return rows


def served_vs_original(rows: list[BenchmarkRow], size: int) -> dict[str, Any] | None:
    """The served default (int8 ONNX) against the original MiniUNet in eager PyTorch, batch 1.

    Returns:
        ``{served, original, batch, size, served_ms, original_ms, ratio}`` (ratio > 1: the
        served model is faster), or None when either was not timed at batch 1.
    """
    at1 = {r.format: r.p50_ms for r in rows if r.batch == 1 and r.p50_ms}
    served, original = at1.get(SERVED_DEFAULT), at1.get(ORIGINAL)
    if served is None or original is None:
        return None
    return {
        "served": SERVED_DEFAULT,
        "original": "MiniUNet, eager PyTorch fp32",
        "batch": 1,
        "size": size,
        "served_ms": served,
        "original_ms": original,
        "ratio": round(original / served, 2),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)


def benchmark_checkpoint(
    checkpoint: Path,
    settings: BenchmarkSettings | None = None,
    *,
    data_root: Path | None = None,
    out_dir: Path | None = None,
) -> BenchmarkResult:
    """Build, score and time every requested format of a checkpoint, and write the reports.

    Args:
        checkpoint: A ``cmi train`` checkpoint (the fp32 parent of every format).
        settings: Formats, batch sizes, input size, repeats and per-format options.
        data_root: Dataset for mIoU (validation split); default the checkpoint's own. When it
            is not here, formats are timed but not scored (status ``exported``).
        out_dir: Where the artifacts and reports go; default ``<run>/benchmark``.

    Returns:
        The rows and the machine description; ``files`` lists the written reports.

    Raises:
        ArtifactError: The checkpoint is missing, damaged, or of an unknown architecture.
        UsageError: An unknown format or invalid size.
    """
    from rich.progress import Progress

    from cmi_cli.console import warn
    from cmi_cli.errors import DataError
    from cmi_cli.export.bench_report import write_reports
    from cmi_cli.training.evaluate import resolve_eval_data

    settings = settings or BenchmarkSettings()
    settings.check()
    checkpoint = Path(checkpoint)
    lineage = check_checkpoint(checkpoint)
    size = int(settings.size or lineage["preprocessing"]["image_size"])
    divisor = int(lineage["model"].get("input_divisor", 1))
    if size % divisor:
        raise UsageError(
            f"--size {size} is not a multiple of {divisor}, the output stride of "
            f"encoder '{lineage['model'].get('encoder')}'",
            hint=f"Use --size {size // divisor * divisor or divisor}",
        )
    root: Path | None = None
    if settings.evaluate:
        try:
            root = resolve_eval_data(lineage, data_root)
        except DataError as exc:
            warn(f"mIoU not measured: {exc.one_line()}")
    out_dir = Path(out_dir) if out_dir is not None else default_benchmark_dir(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(
        checkpoint=checkpoint,
        out_dir=out_dir,
        size=size,
        data_root=root,
        ort_opt_level=settings.ort_opt_level,
        threads=settings.threads,
        prune_ratio=settings.prune_ratio,
        prune_finetune_epochs=settings.prune_finetune_epochs,
        pruned_checkpoint=settings.pruned_checkpoint,
        baseline_checkpoint=settings.baseline_checkpoint,
    )
    if settings.threads is not None:
        import torch

        # The same thread budget for both runtimes, so speed-ups compare like with like.
        torch.set_num_threads(settings.threads)
    cands: list[Candidate] = []
    rows: list[BenchmarkRow] = []
    with Progress(console=err_console(), transient=True, disable=is_quiet()) as progress:
        task = progress.add_task("building formats", total=len(settings.formats))
        for name in settings.formats:
            progress.update(task, description=f"building {name}")
            cand = build(name, ctx)
            progress.update(task, description=f"scoring {name}")
            score(cand, root, settings.eval_batch_size)
            cands.append(cand)
            progress.advance(task)
        progress.update(task, description="peak GEMMs")
        probes = gemm_kernels(settings.threads)
        rates: dict[Kernel, list[float]] = {key: [] for key in probes}
        timing = progress.add_task("timing", total=len(settings.batches))
        timed: list[tuple[int, dict[str, list[float]]]] = []
        for batch in settings.batches:
            progress.update(timing, description=f"timing batch {batch}")
            times = time_interleaved(
                cands, batch, size, settings.repeats, settings.warmup, probes, rates
            )
            timed.append((batch, times))
            progress.advance(timing)
    # The peaks pool every round of every batch: the median of what the machine gave while
    # the formats ran, not the luckiest or unluckiest moment.
    peaks = peaks_from_rates(rates, settings.threads)
    for batch, times in timed:
        rows += make_rows(cands, batch, times, {k: p.gops for k, p in peaks.items()})
    result = BenchmarkResult(
        rows=rows,
        machine=machine_info(peaks),
        settings={
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
            "size": size,
        },
        checkpoint=checkpoint,
        out_dir=out_dir,
        headline=served_vs_original(rows, size),
    )
    result.files = write_reports(result, out_dir)
    return result
