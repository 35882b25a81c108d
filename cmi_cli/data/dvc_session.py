"""Run DVC quietly inside a project: its output captured, progress drawn with rich instead.

DVC's API takes no progress callback and logs and draws tqdm bars of its own; these helpers
silence that output, keep its log records to explain failures, and show our own display.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmi_cli.console import err_console, is_quiet

if TYPE_CHECKING:
    from dvc.repo import Repo

log = logging.getLogger(__name__)
# DVC draws tqdm bars unless these loggers are above ERROR; everything else it logs is captured.
_DVC_PROGRESS_LOGGERS = ("dvc.progress", "dvc_data.callbacks")
_DVC_LOGGERS = ("dvc", "dvc_data", "dvc_objects")


@contextmanager
def quiet_dvc() -> Iterator[list[logging.LogRecord]]:
    """Silence DVC's console output, yielding the records it logs meanwhile."""
    import dvc  # noqa: F401  (importing dvc installs its log handlers: replace them after)

    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    from dvc.ui import ui

    # DVC draws rich spinners ("Collecting stages") on its own console: keep them off ours.
    dvc_console, was_quiet = ui.error_console, ui.error_console.quiet
    dvc_console.quiet = True
    saved: list[tuple[logging.Logger, list[logging.Handler], int, bool]] = []
    keep = _Keep(logging.INFO)
    for name in (*_DVC_LOGGERS, *_DVC_PROGRESS_LOGGERS):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
    try:
        for name in _DVC_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = [keep], False
            logger.setLevel(logging.INFO)
        for name in _DVC_PROGRESS_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        yield records
    finally:
        dvc_console.quiet = was_quiet
        for logger, handlers, level, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        for record in records:
            log.debug("dvc: %s", record.getMessage())


@contextmanager
def open_repo(root: Path) -> Iterator[tuple[Repo, list[logging.LogRecord]]]:
    """Open the DVC repository at ``root`` quietly, yielding it and the records DVC logs."""
    with quiet_dvc() as records:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            yield repo, records


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


@contextmanager
def transfer_progress(label: str, total: int, watch: Path | None, show: bool) -> Iterator[None]:
    """Show a bar that follows the file count of ``watch`` (a local folder being filled).

    DVC's API takes no progress callback, so a local destination is polled; a cloud destination
    gets a spinner with the planned count instead.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if watch is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    progress = Progress(
        *columns, console=err_console(), disable=is_quiet() or not show, transient=True
    )
    before = _count_files(watch) if watch is not None and watch.is_dir() else 0
    stop = threading.Event()

    def follow(task: Any) -> None:
        while watch is not None and not stop.wait(0.2):
            done = _count_files(watch) - before if watch.is_dir() else 0
            progress.update(task, completed=min(max(done, 0), total))

    with progress:
        task = progress.add_task(label, total=total or None)
        poller = threading.Thread(target=follow, args=(task,), daemon=True)
        if watch is not None and not progress.disable:
            poller.start()
        try:
            yield
        finally:
            stop.set()
            if poller.is_alive():
                poller.join()


@contextmanager
def spinner(label: str) -> Iterator[None]:
    """Show a rich spinner with ``label`` on stderr unless ``--quiet``."""
    if is_quiet():
        yield
        return
    with err_console().status(label):
        yield
