"""The rows of ``cmi benchmark``: measured by ``benchmark``, written by ``bench_report``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BenchmarkRow:
    """One format at one batch size."""

    format: str
    batch: int
    status: str
    size_mb: float | None = None
    miou: float | None = None
    p50_ms: float | None = None  # per image
    p90_ms: float | None = None  # per image
    throughput: float | None = None  # images per second
    speedup: float | None = None  # against eager PyTorch fp32 at the same batch
    gflops_per_s: float | None = None
    peak_pct: float | None = None  # of the measured GEMM peak of its own number format
    peak_of: str = ""  # fp32 | int8
    gflops_per_image: float | None = None
    prepare_s: float | None = None
    runtime: str = ""
    layout: str = ""
    allocator: str = ""
    path: str = ""
    detail: str = ""


@dataclass
class BenchmarkResult:
    """All rows, the machine they ran on, and where the reports went."""

    rows: list[BenchmarkRow]
    machine: dict[str, Any]
    settings: dict[str, Any]
    checkpoint: Path
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    headline: dict[str, Any] | None = None  # served default vs original MiniUNet, batch 1

    def below(self, min_miou: float) -> list[str]:
        """Formats whose mIoU is under ``min_miou``, or that failed."""
        names = []
        for row in self.rows:
            low = row.miou is not None and row.miou < min_miou
            if (low or row.status == "failed") and row.format not in names:
                names.append(row.format)
        return names
