"""Reports of ``cmi benchmark``: a rich table, and CSV, JSON and Markdown files."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmi_cli.export.bench_rows import BenchmarkResult, BenchmarkRow
from cmi_cli.utils.files import atomic_write_text

if TYPE_CHECKING:
    from rich.console import Console


# (column title, row attribute, format) for the table and the Markdown report.
COLUMNS: list[tuple[str, str, str]] = [
    ("format", "format", "{}"),
    ("batch", "batch", "{}"),
    ("status", "status", "{}"),
    ("size MB", "size_mb", "{:.2f}"),
    ("mIoU", "miou", "{:.4f}"),
    ("p50 ms/img", "p50_ms", "{:.2f}"),
    ("p90 ms/img", "p90_ms", "{:.2f}"),
    ("img/s", "throughput", "{:.1f}"),
    ("speed-up", "speedup", "{:.2f}x"),
    ("GFLOP/s", "gflops_per_s", "{:.1f}"),
    ("% peak", "peak_pct", "{:.1f}"),
    ("runtime", "runtime", "{}"),
    ("layout", "layout", "{}"),
]


def peak_lines(machine: dict[str, Any]) -> list[str]:
    """One line per measured peak: median, spread of the rounds, and what was timed."""
    lines = []
    for name, peak in (machine.get("peaks") or {}).items():
        lines.append(
            f"{name} GEMM peak {peak['gops']:.1f} GOP/s (rounds {peak['low']:.1f}-"
            f"{peak['high']:.1f}, spread {peak['spread_pct']:.0f}%, median of {peak['rounds']}; "
            f"{peak['kernel']})"
        )
    return lines


def headline_line(result: BenchmarkResult) -> str | None:
    """The served default against the original MiniUNet, as one sentence with the ratio."""
    h = result.headline
    if not h:
        return None
    return (
        f"served default ({h['served']}) vs the original {h['original']}, "
        f"{h['size']}x{h['size']}, batch {h['batch']}: {h['served_ms']:.3g} ms vs "
        f"{h['original_ms']:.3g} ms per image = {h['ratio']:.2f}x"
    )


def cell(row: BenchmarkRow, attr: str, fmt: str) -> str:
    """Format one value of a row; missing values read ``-``."""
    value = getattr(row, attr)
    if value is None or value == "":
        return "-"
    return fmt.format(value)


def to_csv(rows: list[BenchmarkRow]) -> str:
    """Every field of every row, one line each."""
    names = [f.name for f in fields(BenchmarkRow)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return buffer.getvalue()


def to_json(result: BenchmarkResult) -> str:
    """The rows with the machine and settings they were measured with."""
    record: dict[str, Any] = {
        "checkpoint": str(result.checkpoint),
        "machine": result.machine,
        "settings": result.settings,
        "headline": result.headline,
        "rows": [asdict(r) for r in result.rows],
    }
    return json.dumps(record, indent=2, default=str)


def to_markdown(result: BenchmarkResult) -> str:
    """A Markdown table plus the machine facts, for notes and pull requests."""
    m = result.machine
    rt = m.get("torch_runtime", {})
    lines = [
        f"# Benchmark of `{result.checkpoint}`",
        "",
        f"- CPU: {m.get('cpu')} ({m.get('logical_cpus')} logical CPUs), load average "
        f"{m.get('load_average')}",
        *(f"- {line}" for line in peak_lines(m)),
        "- % peak: each row against the peak of its own number format (fp32 or int8), "
        "timed in the same interleaved rounds as the formats",
        f"- torch {m.get('torch')} ({rt.get('threads')} threads, oneDNN {rt.get('mkldnn')}, "
        f"allocator {rt.get('allocator')}); onnxruntime {m.get('onnxruntime')}",
        f"- input {result.settings.get('size')}x{result.settings.get('size')}, "
        f"{result.settings.get('repeats')} interleaved repeats after warm-up; latency per "
        "image; speed-up against eager PyTorch fp32 at the same batch",
        "",
        *([f"- {headline_line(result)}"] if result.headline else []),
        "",
        "| " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in result.rows:
        lines.append("| " + " | ".join(cell(row, a, f) for _, a, f in COLUMNS) + " |")
    notes = [
        f"- {r.format}: {r.detail}"
        for r in result.rows
        if r.detail and r.batch == result.rows[0].batch
    ]
    prep = [
        f"- {r.format}: {r.prepare_s} s"
        for r in result.rows
        if r.prepare_s and r.batch == result.rows[0].batch
    ]
    if notes:
        lines += ["", "Notes:", *notes]
    if prep:
        lines += ["", "Preparation time (export, quantization, compilation, pruning):", *prep]
    return "\n".join(lines) + "\n"


def write_reports(result: BenchmarkResult, out_dir: Path) -> list[Path]:
    """Write ``benchmark.csv``, ``benchmark.json`` and ``benchmark.md`` atomically."""
    out_dir = Path(out_dir)
    return [
        atomic_write_text(out_dir / "benchmark.csv", to_csv(result.rows)),
        atomic_write_text(out_dir / "benchmark.json", to_json(result)),
        atomic_write_text(out_dir / "benchmark.md", to_markdown(result)),
    ]


# The terminal table: short titles, a status mark and compact numbers, so that it fits 80
# columns; runtime, layout and allocator go to a legend below it (the files have everything).
_TERMINAL: list[tuple[str, str, str]] = [
    ("format", "format", "{}"),
    ("bs", "batch", "{}"),
    ("MB", "size_mb", "{:.2f}"),
    ("mIoU", "miou", "{:.3f}"),
    ("p50 ms", "p50_ms", "{:.4g}"),
    ("p90 ms", "p90_ms", "{:.4g}"),
    ("img/s", "throughput", "{:.4g}"),
    ("speed-up", "speedup", "{:.3g}x"),
    ("GFLOP/s", "gflops_per_s", "{:.3g}"),
    ("%peak", "peak_pct", "{:.3g}"),
]
_MARKS = {"validated": "[green]✓[/]", "exported": "[yellow]~[/]", "failed": "[red]✗[/]"}


def render_benchmark(result: BenchmarkResult, console: Console) -> None:
    """Print the benchmark table, then each format's runtime, layout and notes."""
    from rich import box
    from rich.table import Table

    m = result.machine
    table = Table(
        title=f"{result.checkpoint.name} at {result.settings.get('size')} px, latency per image; "
        "%peak of its own format's GEMM peak",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        pad_edge=False,
    )
    for title, attr, _ in _TERMINAL:
        table.add_column(
            title, justify="left" if attr == "format" else "right", no_wrap=True, min_width=5
        )
    for row in result.rows:
        values = [cell(row, a, f) for _, a, f in _TERMINAL]
        values[0] = f"{_MARKS.get(row.status, '?')} {values[0]}"
        table.add_row(*values)
    console.print(table)
    console.print(
        "  ✓ validated (mIoU measured), ~ exported (timed only), ✗ failed; "
        f"{m.get('cpu')}, load {m.get('load_average')}",
        highlight=False,
    )
    for line in peak_lines(m):
        console.print(f"  {line}", highlight=False)
    headline = headline_line(result)
    if headline:
        console.print(f"  {headline}", highlight=False)
    seen: set[str] = set()
    for row in result.rows:
        if row.format in seen:
            continue
        seen.add(row.format)
        facts = ", ".join(x for x in (row.runtime, row.layout, row.allocator) if x)
        extra = f"; {row.detail}" if row.detail else ""
        prep = f"; prepared in {row.prepare_s} s" if row.prepare_s else ""
        console.print(f"  {row.format}: {facts or 'not built'}{prep}{extra}", highlight=False)
