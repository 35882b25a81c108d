"""The run folders under ``run.dir``: which one ``--resume`` continues.

Its own module because both ``train`` (choosing the run) and ``resume`` (reading the run's
saved config) need it, and they import each other otherwise.
"""

from __future__ import annotations

from pathlib import Path


def latest_run(runs_dir: Path) -> str | None:
    """Name of the run under ``runs_dir`` whose ``last.ckpt`` is newest (None if none)."""
    candidates = sorted(
        (p for p in runs_dir.glob("*/checkpoints/last.ckpt")), key=lambda p: p.stat().st_mtime
    )
    return candidates[-1].parents[1].name if candidates else None
