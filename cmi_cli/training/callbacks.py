"""Lightning callbacks that keep a run folder complete and resumable."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L

from cmi_cli.training.reports import plot_curves, write_history_csv

log = logging.getLogger(__name__)


class HistoryCallback(L.Callback):
    """Record one row per epoch and rewrite ``history.csv`` and ``curves.png`` after each.

    The rows also live in the checkpoint (``state_dict``), so a run resumed from ``last.ckpt``
    continues the exact history of the epochs that checkpoint has seen: no gap, no duplicate,
    even when the process was killed between saving the checkpoint and writing the CSV.

    Args:
        run_dir: The run folder.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []
        self._epoch_start = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        """Return the rows so far (plain values: safe to load with weights_only)."""
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the rows of a resumed run."""
        self.rows = [dict(r) for r in state_dict.get("rows", [])]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the epoch's clock."""
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Append this epoch's row (runs before the checkpoint callback saves)."""
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "epoch_seconds": round(time.perf_counter() - self._epoch_start, 3),
        }
        for key in ("train/loss_epoch", "val/loss", "val/miou", "val/pixel_acc"):
            if key in metrics:
                row[key.replace("_epoch", "")] = _float(metrics[key])
        if "val/mean_class_acc" in metrics:
            row["val/mean_class_acc"] = _float(metrics["val/mean_class_acc"])
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            write_history_csv(self.rows, self.run_dir / "history.csv")
            try:
                plot_curves(self.rows, self.run_dir / "curves.png")
            except Exception as exc:  # a plot must never stop training
                log.warning("could not draw curves.png: %s", exc)


def _float(value: Any) -> float | None:
    out = float(value)
    return None if math.isnan(out) else out
