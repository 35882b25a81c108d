"""The formats ``cmi benchmark`` compares: how each is built, and how it predicts.

Every builder returns a :class:`Candidate` whose ``predict`` maps a float32 NCHW numpy batch to
logits, so timing and scoring treat eager PyTorch, ``torch.compile``, ONNX Runtime fp32 and
int8 and the pruned model alike. A builder that fails returns a ``failed`` candidate with the
reason instead of raising: one broken format must not hide the others' numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.errors import CmiError

Predict = Callable[[np.ndarray], np.ndarray]

FORMATS = ("torch", "torch-compile", "onnx", "onnx-int8", "pruned", "pruned-onnx", "baseline")
DEFAULT_FORMATS = ("torch", "torch-compile", "onnx", "onnx-int8", "pruned", "baseline")


@dataclass
class Candidate:
    """One format, ready to time (or the reason it is not)."""

    name: str
    status: str  # exported | validated | failed
    predict: Predict | None = None
    lineage: dict[str, Any] | None = None
    path: Path | None = None
    size_mb: float | None = None
    flops_per_image: float | None = None
    runtime: str = ""
    layout: str = ""
    allocator: str = ""
    prepare_s: float | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildContext:
    """What every builder may need: the source checkpoint, sizes, options, and shared results."""

    checkpoint: Path
    out_dir: Path
    size: int
    data_root: Path | None
    ort_opt_level: str = "all"
    threads: int | None = None
    prune_ratio: float = 0.5
    prune_finetune_epochs: int = 2
    pruned_checkpoint: Path | None = None
    baseline_checkpoint: Path | None = None
    cache: dict[str, Any] = field(default_factory=dict)


def failed(name: str, exc: BaseException) -> Candidate:
    """A ``failed`` candidate naming what went wrong in one line."""
    text = exc.one_line() if isinstance(exc, CmiError) else f"{type(exc).__name__}: {exc}"
    return Candidate(name, "failed", detail=(text.strip().splitlines() or ["failed"])[0][:200])


def _weights_mb(model: Any) -> float:
    return round(sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6, 4)


def _torch_candidate(name: str, model: Any, lineage: dict[str, Any] | None, size: int) -> Candidate:
    import torch

    from cmi_cli.export.timing import allocator, fastest_layout, torch_forward
    from cmi_cli.models.complexity import count_flops

    flops = count_flops(model, (1, 3, size, size))
    channels_last = fastest_layout(model, size)
    return Candidate(
        name,
        "exported",
        predict=torch_forward(model, channels_last=channels_last),
        lineage=lineage,
        size_mb=_weights_mb(model),
        flops_per_image=float(flops),
        runtime=f"torch eager fp32, {torch.get_num_threads()} threads",
        layout="channels_last" if channels_last else "NCHW",
        allocator=allocator(),
    )


def build_torch(ctx: BuildContext) -> Candidate:
    """Eager PyTorch fp32 of the checkpoint, channels_last (the fastest honest eager layout)."""
    from cmi_cli.training.checkpoint import load_model

    model, lineage = load_model(ctx.checkpoint)
    cand = _torch_candidate("torch", model, lineage, ctx.size)
    cand.path = ctx.checkpoint
    return cand


def build_torch_compile(ctx: BuildContext) -> Candidate:
    """``torch.compile`` (Inductor, C++ codegen on CPU); compile time is timed on first calls."""
    import torch

    from cmi_cli.export.timing import allocator, torch_forward
    from cmi_cli.training.checkpoint import load_model

    model, lineage = load_model(ctx.checkpoint)
    base = _torch_candidate("torch-compile", model, lineage, ctx.size)
    predict = torch_forward(model, channels_last=base.layout == "channels_last", compile=True)

    start = time.perf_counter()
    x = np.zeros((1, 3, ctx.size, ctx.size), dtype=np.float32)
    predict(x)  # compile now: a failure is this format's status, and its time is reported
    base.prepare_s = round(time.perf_counter() - start, 2)
    base.predict, base.allocator = predict, allocator()
    base.runtime = f"torch.compile inductor fp32, {torch.get_num_threads()} threads"
    base.path = ctx.checkpoint
    return base


def _onnx_candidate(name: str, path: Path, ctx: BuildContext, flops: float | None) -> Candidate:
    from cmi_cli.export.ort_predict import OnnxPredictor

    predictor = OnnxPredictor(path, threads=ctx.threads, graph_optimization_level=ctx.ort_opt_level)
    return Candidate(
        name,
        "exported",
        predict=predictor.predict,
        lineage=predictor.lineage,
        path=path,
        size_mb=round(path.stat().st_size / 1e6, 4),
        flops_per_image=flops,
        runtime=f"onnxruntime opt={ctx.ort_opt_level}, {ctx.threads or 'default'} threads",
        layout="NCHW",
        allocator="onnxruntime arena",
    )


def _export(ctx: BuildContext, checkpoint: Path, out: Path) -> tuple[Path, float]:
    from cmi_cli.export.onnx_export import export_onnx

    start = time.perf_counter()
    result = export_onnx(checkpoint, out, data_root=ctx.data_root)
    return result.path, round(time.perf_counter() - start, 2)


def _flops_of(checkpoint: Path, size: int) -> float:
    from cmi_cli.models.complexity import count_flops
    from cmi_cli.training.checkpoint import load_model

    model, _ = load_model(checkpoint)
    return float(count_flops(model, (1, 3, size, size)))


def build_onnx(ctx: BuildContext) -> Candidate:
    """Export with ``cmi export onnx`` (validated against PyTorch), run with ONNX Runtime."""
    path, seconds = _export(ctx, ctx.checkpoint, ctx.out_dir / "model.onnx")
    ctx.cache["onnx"] = path
    cand = _onnx_candidate("onnx", path, ctx, _flops_of(ctx.checkpoint, ctx.size))
    cand.status, cand.prepare_s = "validated", seconds
    return cand


def build_onnx_int8(ctx: BuildContext) -> Candidate:
    """Static QDQ int8 of the ONNX export (u8 activations, s8 weights), via ``cmi quantize``."""
    from cmi_cli.export.quantize import quantize_onnx

    fp32 = ctx.cache.get("onnx")
    if fp32 is None:
        fp32, _ = _export(ctx, ctx.checkpoint, ctx.out_dir / "model.onnx")
        ctx.cache["onnx"] = fp32
    start = time.perf_counter()
    # The benchmark judges accuracy itself (--min-miou), so nothing is rejected here.
    result = quantize_onnx(
        fp32, ctx.out_dir / "model.int8.onnx", data_root=ctx.data_root, max_miou_drop=1.0
    )
    seconds = round(time.perf_counter() - start, 2)
    cand = _onnx_candidate("onnx-int8", result.path, ctx, _flops_of(ctx.checkpoint, ctx.size))
    cand.prepare_s = seconds
    cand.extra["pixel_agreement"] = round(result.pixel_agreement, 6)
    return cand


def _pruned_checkpoint(ctx: BuildContext) -> tuple[Path, float | None]:
    if ctx.pruned_checkpoint is not None:
        return ctx.pruned_checkpoint, None
    if "pruned" in ctx.cache:
        return ctx.cache["pruned"]
    from cmi_cli.export.prune import prune_checkpoint

    start = time.perf_counter()
    result = prune_checkpoint(
        ctx.checkpoint,
        ctx.prune_ratio,
        finetune_epochs=ctx.prune_finetune_epochs,
        out=ctx.out_dir / f"pruned-r{ctx.prune_ratio:g}.ckpt",
        data_root=ctx.data_root,
        show_progress=False,
    )
    ctx.cache["pruned"] = (result.path, round(time.perf_counter() - start, 2))
    return ctx.cache["pruned"]


def build_pruned(ctx: BuildContext) -> Candidate:
    """The channel-pruned, fine-tuned checkpoint in eager PyTorch (made unless --pruned given)."""
    from cmi_cli.training.checkpoint import load_model

    path, seconds = _pruned_checkpoint(ctx)
    model, lineage = load_model(path)
    cand = _torch_candidate("pruned", model, lineage, ctx.size)
    cand.path, cand.prepare_s = path, seconds
    cand.runtime += f", channels pruned by {lineage.get('parent', {}).get('ratio', '?')}"
    return cand


def build_pruned_onnx(ctx: BuildContext) -> Candidate:
    """The pruned checkpoint exported to ONNX and run with ONNX Runtime."""
    ckpt, _ = _pruned_checkpoint(ctx)
    path, seconds = _export(ctx, ckpt, ctx.out_dir / "pruned.onnx")
    cand = _onnx_candidate("pruned-onnx", path, ctx, _flops_of(ckpt, ctx.size))
    cand.status, cand.prepare_s = "validated", seconds
    return cand


def build_baseline(ctx: BuildContext) -> Candidate:
    """The original project's ``mini_unet`` in eager PyTorch (fresh weights unless --baseline)."""
    from cmi_cli.models.registry import build_model
    from cmi_cli.training.checkpoint import load_model

    if ctx.baseline_checkpoint is not None:
        model, lineage = load_model(ctx.baseline_checkpoint)
        if lineage["model"]["name"] != "mini_unet":
            raise CmiError(
                f"--baseline {ctx.baseline_checkpoint} is a {lineage['model']['name']!r} model",
                hint="Pass a checkpoint trained with model=mini_unet",
            )
        cand = _torch_candidate("baseline", model, lineage, ctx.size)
        cand.path = ctx.baseline_checkpoint
    else:
        from cmi_cli.training.checkpoint import load_checkpoint

        num_classes = int(load_checkpoint(ctx.checkpoint)["cmi_lineage"]["num_classes"])
        model = build_model("mini_unet", num_classes).eval()
        cand = _torch_candidate("baseline", model, None, ctx.size)
        cand.detail = "untrained weights: latency only (pass --baseline CKPT for its mIoU)"
    cand.runtime = "mini_unet " + cand.runtime
    return cand


BUILDERS: dict[str, Callable[[BuildContext], Candidate]] = {
    "torch": build_torch,
    "torch-compile": build_torch_compile,
    "onnx": build_onnx,
    "onnx-int8": build_onnx_int8,
    "pruned": build_pruned,
    "pruned-onnx": build_pruned_onnx,
    "baseline": build_baseline,
}


def build(name: str, ctx: BuildContext) -> Candidate:
    """Build one format; any failure becomes a ``failed`` candidate with the reason."""
    try:
        return BUILDERS[name](ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a format that cannot be built is a result, not a crash
        return failed(name, exc)
