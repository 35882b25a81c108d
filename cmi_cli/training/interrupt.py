"""Stopping a training run on SIGTERM or SIGINT without losing it.

Lightning already stops on SIGTERM: its handler sets ``trainer.received_sigterm`` and its loops
raise ``SIGTERMException`` (a ``SystemExit``) at the next batch boundary, after calling every
callback's ``on_exception``. Released versions exit with status 0 and save nothing, and a
Ctrl-C (SIGINT) lands as a ``KeyboardInterrupt`` wherever Python happens to be. Here:

* SIGINT takes the same route as SIGTERM (a second Ctrl-C still stops at once);
* a stop that arrives while an epoch is being validated waits for the validation to end.
  Lightning's loops would stop mid-validation, and a checkpoint saved there looks, on resume,
  like one saved after validation: the epoch would never be validated (no scores, no row in
  ``logs/metrics.csv``). So Lightning's SIGTERM handler is set aside for the validation and
  the stop is passed on when it ends;
* ``on_exception`` saves ``last.ckpt`` at the stop (resumable with ``--resume``; the mid-epoch
  position is Lightning's to restore) and a ``metrics.json`` marked ``interrupted``; Lightning
  itself flushes the loggers (``logs/metrics.csv``);
* the command exits ``128 + signal``: 143 for SIGTERM, 130 for SIGINT (the shell's convention,
  and what newer Lightning releases give ``SIGTERMException``).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L

from cmi_cli.errors import CmiError
from cmi_cli.utils.files import atomic_write_text

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(CmiError):
    """Training stopped on a signal; the exit status is ``128 + signal``."""


class GracefulStop(L.Callback):
    """Turn SIGTERM/SIGINT into Lightning's graceful stop, and save the run when it stops.

    Args:
        run_dir: The run folder.
        run_name: The run's name (for the resume command it prints).
        monitor: The metric the run's best epoch is chosen by.
        mode: ``max`` or ``min`` for ``monitor``.
    """

    def __init__(self, run_dir: Path, run_name: str, monitor: str, mode: str) -> None:
        self.run_dir = Path(run_dir)
        self.run_name = run_name
        self.monitor, self.mode = monitor, mode
        self.signum: int | None = None
        self.saved: Path | None = None
        self._training = False
        self._validating = False
        self._held_handler: Any = None

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        """Handle SIGTERM and SIGINT while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            # Lightning keeps this SIGTERM handler and calls it after its own during fit.
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            log.info("received %s: stopping after this batch", signal.Signals(signum).name)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now

    def _request_stop(self, trainer: L.Trainer) -> None:
        if self._validating:
            return
        if self.signum is not None and not trainer.received_sigterm:
            # Lightning's loops stop gracefully on this flag; a SIGINT, or a SIGTERM that came
            # before fit installed Lightning's handler, sets it here.
            trainer._signal_connector.received_sigterm = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """From here on a stop saves a checkpoint (the resumed state is loaded by now)."""
        self._training = True
        self._request_stop(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        """Pass a pending stop to Lightning."""
        self._request_stop(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Hold any stop until this validation ends (training's validations only)."""
        if not self._training or trainer.sanity_checking:
            return
        self._validating = True
        if trainer.received_sigterm:
            # Requested at the epoch's last training batch: passed on after the validation.
            self.signum = self.signum or signal.SIGTERM
            trainer._signal_connector.received_sigterm = False
        if threading.current_thread() is threading.main_thread():
            self._held_handler = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._handle)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore Lightning's SIGTERM handler and pass on a stop that came meanwhile."""
        if not self._validating:
            return
        self._validating = False
        if self._held_handler is not None:
            signal.signal(signal.SIGTERM, self._held_handler)
            self._held_handler = None
        self._request_stop(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """On a signal's stop, save ``last.ckpt`` and the summary so far."""
        if self.signum is None or not isinstance(exception, SystemExit) or not self._training:
            return
        path = self.run_dir / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(path)
        self.saved = path
        if trainer.is_global_zero:
            self._write_summary(trainer)

    def _write_summary(self, trainer: L.Trainer) -> None:
        history = next(
            (
                list(c.rows)
                for c in getattr(trainer, "callbacks", [])
                if type(c).__name__ == "HistoryCallback"
            ),
            [],
        )
        scored = [r for r in history if r.get(self.monitor) is not None]
        pick = max if self.mode == "max" else min
        best = pick(scored, key=lambda r: r[self.monitor]) if scored else {}
        summary = {
            "status": "interrupted",
            "signal": signal.Signals(self.signum or 0).name,
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "monitor": self.monitor,
            "best_epoch": best.get("epoch"),
            "epochs_run": len(history),
            "best": best,
            "final": history[-1] if history else {},
            "resume": self.resume_command(),
        }
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(summary, indent=2))

    def resume_command(self) -> str:
        """The command that continues this run."""
        return f"cmi train run.name={self.run_name} --resume"

    def error(self, trainer: Any) -> TrainingInterrupted:
        """The one-line error the stopped command exits with (status ``128 + signal``)."""
        signum = int(self.signum or signal.SIGTERM)
        name = signal.Signals(signum).name
        where = f"in epoch {trainer.current_epoch} (step {trainer.global_step})"
        last = self.saved or self.run_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            message = f"training stopped by {name} {where}; saved {last} and the run so far"
            hint = f"Continue with: {self.resume_command()}"
        else:
            message = f"training stopped by {name} before its first checkpoint"
            hint = "Start the run again"
        return TrainingInterrupted(message, hint=hint, exit_code=128 + signum)
