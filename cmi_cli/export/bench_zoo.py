"""``cmi benchmark --zoo``: quality against latency for several trained checkpoints.

Trains nothing. Each checkpoint goes through the same steps as ``cmi benchmark --formats
onnx,onnx-int8 --batch 1``: export to ONNX (validated against PyTorch), static int8
quantization, mIoU of both on the dataset's validation split, latency per image at batch 1
after a warm-up (median of interleaved repeats). One row per checkpoint adds its parameter
count, GFLOPs at the input size and file sizes; the rows go to ``zoo.csv``, ``zoo.md`` and
``zoo.json``, and ``zoo.png`` plots mIoU against fp32 and int8 latency.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cmi_cli import __version__
from cmi_cli.errors import UsageError
from cmi_cli.utils.files import atomic_path, atomic_write_text

FORMATS = ("onnx", "onnx-int8")


@dataclass
class ZooRow:
    """One checkpoint of the zoo: its cost, size, quality and speed in fp32 and int8."""

    name: str
    checkpoint: str
    architecture: str
    params_m: float | None = None
    gflops: float | None = None
    fp32_mb: float | None = None
    int8_mb: float | None = None
    miou_fp32: float | None = None
    miou_int8: float | None = None
    fp32_ms: float | None = None
    int8_ms: float | None = None
    split: str = ""
    status: str = "ok"
    detail: str = ""


@dataclass
class ZooResult:
    """The rows, the machine they were timed on, and the files written."""

    rows: list[ZooRow]
    size: int
    machine: dict[str, Any]
    out_dir: Path
    files: list[Path] = field(default_factory=list)


def _architecture(lineage: dict[str, Any]) -> str:
    model = lineage.get("model") or {}
    params = model.get("params") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "in_channels")
    return f"{model.get('name', '?')}" + (f" ({shown})" if shown else "")


def _names(checkpoints: Sequence[Path]) -> list[str]:
    """Run folder names (``runs/NAME/checkpoints/x.ckpt``), else file stems; made unique."""
    names: list[str] = []
    for ckpt in checkpoints:
        base = ckpt.parent.parent.name if ckpt.parent.name == "checkpoints" else ckpt.stem
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def benchmark_zoo(
    checkpoints: Sequence[Path],
    out_dir: Path,
    *,
    size: int = 256,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    data_root: Path | None = None,
) -> ZooResult:
    """Export, quantize, score and time each checkpoint; write the table and the scatter plot.

    Args:
        checkpoints: ``cmi train`` checkpoints (any architecture the registry builds).
        out_dir: Where ``zoo.*`` and one folder of artifacts per checkpoint go.
        size: Input height and width for latency and GFLOPs.
        repeats: Timed rounds per format.
        warmup: Untimed calls first.
        threads: ONNX Runtime intra-op threads (default: all cores).
        data_root: Dataset for mIoU; default each checkpoint's own.

    Raises:
        UsageError: No checkpoints, or one that does not exist.
        ArtifactError: A checkpoint that cannot be loaded.
    """
    from cmi_cli.export.benchmark import BenchmarkSettings, benchmark_checkpoint
    from cmi_cli.models.complexity import count_flops, count_parameters
    from cmi_cli.training.checkpoint import load_model

    if not checkpoints:
        raise UsageError("--zoo needs at least one checkpoint")
    missing = [str(c) for c in checkpoints if not Path(c).is_file()]
    if missing:
        raise UsageError(f"checkpoint not found: {', '.join(missing)}", hint="Check the paths")
    out_dir = Path(out_dir)
    rows: list[ZooRow] = []
    machine: dict[str, Any] = {}
    for ckpt, name in zip(checkpoints, _names([Path(c) for c in checkpoints]), strict=True):
        model, lineage = load_model(Path(ckpt))
        row = ZooRow(name, str(ckpt), _architecture(lineage))
        row.params_m = round(count_parameters(model) / 1e6, 4)
        # From the network itself, so a row whose export fails still shows its cost.
        row.gflops = round(count_flops(model, (1, 3, size, size)) / 1e9, 4)
        del model
        settings = BenchmarkSettings(
            formats=FORMATS,
            batches=(1,),
            size=size,
            repeats=repeats,
            warmup=warmup,
            threads=threads,
        )
        result = benchmark_checkpoint(
            Path(ckpt), settings, data_root=data_root, out_dir=out_dir / name
        )
        machine = result.machine
        by_format = {r.format: r for r in result.rows}
        fp32, int8 = by_format.get("onnx"), by_format.get("onnx-int8")
        if fp32 is not None:
            row.fp32_mb = fp32.size_mb
            row.miou_fp32, row.fp32_ms = fp32.miou, fp32.p50_ms
        if int8 is not None:
            row.int8_mb, row.miou_int8, row.int8_ms = int8.size_mb, int8.miou, int8.p50_ms
        failed = [r for r in result.rows if r.status == "failed"]
        if failed:
            row.status = "failed"
            row.detail = "; ".join(f"{r.format}: {r.detail}" for r in failed)
        row.split = _split_name(lineage, data_root)
        rows.append(row)
    zoo = ZooResult(rows, size, machine, out_dir)
    zoo.files = write_zoo(zoo)
    return zoo


def _split_name(lineage: dict[str, Any], data_root: Path | None) -> str:
    from cmi_cli.data.layout import open_split
    from cmi_cli.training.evaluate import resolve_eval_data

    try:
        return open_split(resolve_eval_data(lineage, data_root))[1]
    except Exception:  # no data here: the row is timed, not scored
        return ""


COLUMNS = (
    ("name", "model"),
    ("architecture", "architecture"),
    ("params_m", "params (M)"),
    ("gflops", "GFLOPs"),
    ("fp32_mb", "fp32 MB"),
    ("int8_mb", "int8 MB"),
    ("miou_fp32", "mIoU fp32"),
    ("miou_int8", "mIoU int8"),
    ("fp32_ms", "fp32 ms"),
    ("int8_ms", "int8 ms"),
)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def to_markdown(zoo: ZooResult) -> str:
    """The zoo table in Markdown, with the conditions under it."""
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in zoo.rows:
        lines.append("| " + " | ".join(_cell(getattr(row, key)) for key, _ in COLUMNS) + " |")
    splits = sorted({r.split for r in zoo.rows if r.split}) or ["not scored"]
    cpu = zoo.machine.get("cpu", "?")
    lines += [
        "",
        f"ONNX Runtime on {cpu} ({zoo.machine.get('logical_cpus', '?')} logical CPUs), input "
        f"{zoo.size}x{zoo.size}, batch 1, median latency per image; GFLOPs of one forward pass "
        f"at that size; mIoU on the {', '.join(splits)} split of each checkpoint's data; "
        f"cmi-cli {__version__}.",
    ]
    failed = [r for r in zoo.rows if r.status != "ok"]
    lines += [f"- {r.name}: {r.detail}" for r in failed]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[ZooRow]) -> str:
    """All row fields as CSV."""
    buf = io.StringIO()
    fields = list(ZooRow.__dataclass_fields__)
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return buf.getvalue()


def plot_zoo(zoo: ZooResult, path: Path) -> Path:
    """Scatter mIoU against latency: fp32 (circle) and int8 (triangle) joined per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, row in enumerate(zoo.rows):
        colour = f"C{i % 10}"
        points = [
            (row.fp32_ms, row.miou_fp32, "o", "fp32"),
            (row.int8_ms, row.miou_int8, "^", "int8"),
        ]
        shown = [(x, y, m, k) for x, y, m, k in points if x is not None and y is not None]
        for x, y, marker, _ in shown:
            ax.scatter([x], [y], marker=marker, color=colour, s=60, zorder=3)
        if len(shown) == 2:
            ax.plot([p[0] for p in shown], [p[1] for p in shown], color=colour, alpha=0.5)
        if shown:
            ax.annotate(
                row.name,
                (shown[0][0], shown[0][1]),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=9,
                color=colour,
            )
    ax.scatter([], [], marker="o", color="grey", label="fp32 ONNX")
    ax.scatter([], [], marker="^", color="grey", label="int8 ONNX (static QDQ)")
    ax.set_xscale("log")
    ax.set_xlabel(f"latency per image, ms (batch 1, {zoo.size}x{zoo.size}, log scale)")
    splits = sorted({r.split for r in zoo.rows if r.split}) or ["-"]
    ax.set_ylabel(f"mIoU ({', '.join(splits)} split)")
    ax.set_title("Quality against latency (ONNX Runtime, this machine)")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.2, y=0.25)  # room for the names beside the points
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_zoo(zoo: ZooResult) -> list[Path]:
    """Write ``zoo.csv``, ``zoo.md``, ``zoo.json`` and ``zoo.png`` atomically."""
    out = zoo.out_dir
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "tool": f"cmi-cli {__version__}",
        "size": zoo.size,
        "machine": zoo.machine,
        "rows": [asdict(r) for r in zoo.rows],
    }
    return [
        atomic_write_text(out / "zoo.csv", to_csv(zoo.rows)),
        atomic_write_text(out / "zoo.md", to_markdown(zoo)),
        atomic_write_text(out / "zoo.json", json.dumps(record, indent=2, default=str) + "\n"),
        plot_zoo(zoo, out / "zoo.png"),
    ]
