"""Types the monitoring fixtures return (imported by conftest.py and the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DriftData:
    """Two samples drawn from the same generator with different seeds, and shifted copies.

    Attributes:
        reference: Seed 0 (80 images, 48 px; 40 in ``test``).
        same: Seed 1, the same distribution.
        bright: Seed 1 with every photo 60 levels brighter.
        blurred: Seed 1 with every photo blurred.
    """

    reference: Path
    same: Path
    bright: Path
    blurred: Path


@dataclass(frozen=True)
class MonitorProject:
    """A project trained with ``debug=tiny`` on the 80-image reference sample."""

    root: Path
    ckpt: Path
    run_dir: Path
