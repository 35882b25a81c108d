"""Training progress: a live rich bar in a terminal, plain periodic lines anywhere else.

In CI, ``> train.log``, Cloud Run or a Vertex AI job, a redrawn bar turns into carriage returns
and escape codes; there a line every ``interval`` seconds (and one per finished epoch) says the
same: epoch, step, elapsed time, the latest metrics.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

from cmi_cli.console import is_interactive

INTERVAL_ENV = "CMI_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


class PlainProgressBar(ProgressBar):
    """Lightning's progress bar as plain lines: no carriage return, no escape code.

    Args:
        interval_s: Least seconds between two step lines (epoch lines always print).
        stream: Where the lines go; default stderr (stdout stays for data).
    """

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, stream: IO[str] | None = None):
        super().__init__()
        self.interval_s = float(interval_s)
        self._stream = stream
        self._enabled = True
        self._start = time.monotonic()
        self._last = float("-inf")

    @property
    def is_enabled(self) -> bool:
        """Whether lines are printed (Lightning disables it on non-zero ranks)."""
        return self._enabled

    def disable(self) -> None:
        """Stop printing (called by Lightning on processes other than rank 0)."""
        self._enabled = False

    def enable(self) -> None:
        """Print again."""
        self._enabled = True

    def _line(self, text: str) -> None:
        if not self._enabled:
            return
        elapsed = time.monotonic() - self._start
        stream = self._stream or sys.stderr
        stream.write(f"[{elapsed:7.1f}s] {text}\n")
        stream.flush()

    def _metrics(self, trainer: Any, pl_module: Any) -> str:
        parts = []
        for key, value in self.get_metrics(trainer, pl_module).items():
            if key == "v_num":
                continue
            number = value.item() if hasattr(value, "item") else value
            parts.append(f"{key} {number:.4g}" if isinstance(number, float) else f"{key} {number}")
        return ", ".join(parts)

    def _epoch(self, trainer: Any) -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{total}"

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Say that training starts (after the sanity check)."""
        self._start = time.monotonic()
        self._line(f"training: {self.total_train_batches} steps per epoch")

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """A step line at most every ``interval_s`` seconds."""
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        step = f"step {batch_idx + 1}/{self.total_train_batches}"
        metrics = self._metrics(trainer, pl_module)
        self._line(f"{self._epoch(trainer)} {step}" + (f": {metrics}" if metrics else ""))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """One line per finished epoch with its metrics (validation's included)."""
        metrics = self._metrics(trainer, pl_module)
        self._line(f"{self._epoch(trainer)} done" + (f": {metrics}" if metrics else ""))


def progress_callback() -> Any:
    """The progress bar for this output: rich when it is a terminal, plain lines otherwise."""
    if is_interactive():
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar(leave=True, console_kwargs={"stderr": True})
    interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    return PlainProgressBar(interval_s=interval)
