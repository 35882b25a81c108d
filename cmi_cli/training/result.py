"""What a training run returns; its own module so ``train`` and ``finish`` both import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What a finished training run produced."""

    run_dir: Path
    best_ckpt: Path | None
    last_ckpt: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    is_global_zero: bool = True
