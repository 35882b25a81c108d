"""A Lightning callback that lets Optuna stop a poor trial early.

Our own: Optuna 5 keeps its Lightning callback in the separate optuna-integration package.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import optuna


class OptunaPruning(L.Callback):
    """Report ``monitor`` after each validation epoch and raise ``TrialPruned`` when told to.

    The step reported is the number of epochs done, the resource Hyperband counts.

    Args:
        trial: The Optuna trial this run belongs to.
        monitor: The logged metric the study optimises, e.g. ``val/miou``.
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report this epoch's value; stop the run if the pruner says so."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        current: Any = trainer.callback_metrics.get(self.monitor)
        if current is None:
            return
        value = float(current)
        if math.isnan(value):
            return
        epoch = int(trainer.current_epoch) + 1
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor}={value:.4f}")
