"""The trained project the export tests share (a type the fixtures and tests both name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainedProject:
    """A project folder with the tiny sample and a run trained with ``debug=tiny``."""

    root: Path
    ckpt: Path
