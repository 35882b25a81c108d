"""Lightning's CSV logger, made to continue a resumed run's ``logs/metrics.csv``.

Lightning deletes ``metrics.csv`` when a logger starts in a folder that has one, so a resumed
run used to lose every row logged before it. :func:`cmi_cli.training.resume.keep_metrics_rows`
first cuts the file back to the rows its checkpoint has seen; this logger then appends.
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    """An experiment writer that appends to the existing ``metrics.csv``."""

    def __init__(self, log_dir: str, header: list[str]) -> None:
        super().__init__(log_dir=log_dir)
        # Appended rows must use the file's columns; a new column rewrites it (Lightning's own
        # logic), keeping the old rows.
        self.metrics_keys = list(header)

    def _check_log_dir_exists(self) -> None:
        """Keep the file: its rows were cut back to the checkpoint already."""


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger`` that keeps the rows of ``metrics.csv`` whose header it is given.

    Args:
        header: The columns of the existing (already cut back) ``metrics.csv``.
        **kwargs: ``CSVLogger``'s arguments.
    """

    def __init__(self, header: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._header = list(header)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The writer, created on first use."""
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _ContinuingWriter(log_dir=self.log_dir, header=self._header)
        return self._experiment
