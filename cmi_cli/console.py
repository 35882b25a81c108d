"""One place for terminal output and logging.

Messages go to stderr through a rich console so that stdout stays clean for data a user may pipe
(``--json``, ``--cfg``). ``setup_logging`` is called once by the CLI's root callback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_state = {"verbose": False, "quiet": False}
_consoles: dict[str, Console] = {}
# ``plain`` or ``live`` forces the progress style; by default it follows the stream.
PROGRESS_ENV = "CMI_PROGRESS"


def is_interactive(stream: IO[str] | None = None) -> bool:
    """Whether live progress (redrawn bars) suits ``stream`` (default stderr).

    Only a real terminal redraws: in CI, ``> log``, Cloud Run or Vertex AI a bar's carriage
    returns and escape codes become noise, so progress prints plain periodic lines instead.
    ``FORCE_COLOR`` (set by many CI systems) does not count; ``CMI_PROGRESS=plain|live`` decides.
    """
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("plain", "live"):
        return forced == "live"
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _terminal_setting(stream: IO[str]) -> bool | None:
    # None lets rich detect a terminal; False stops FORCE_COLOR & co. turning a pipe into one.
    return None if is_interactive(stream) else False


def err_console() -> Console:
    """Return the shared console that writes to stderr."""
    if "err" not in _consoles:
        from rich.console import Console

        _consoles["err"] = Console(
            stderr=True, highlight=False, force_terminal=_terminal_setting(sys.stderr)
        )
    return _consoles["err"]


def out_console() -> Console:
    """Return the shared console that writes to stdout (tables, results)."""
    if "out" not in _consoles:
        from rich.console import Console

        _consoles["out"] = Console(highlight=False, force_terminal=_terminal_setting(sys.stdout))
    return _consoles["out"]


def is_verbose() -> bool:
    """Return whether ``--verbose`` was given (debug logs and tracebacks)."""
    return _state["verbose"]


def is_quiet() -> bool:
    """Return whether ``--quiet`` was given (only warnings and errors)."""
    return _state["quiet"]


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the ``cmi_cli`` logger for the chosen verbosity.

    Args:
        verbose: Show debug records and tracebacks.
        quiet: Show only warnings and errors.
    """
    _state["verbose"], _state["quiet"] = verbose, quiet
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("cmi_cli")
    logger.setLevel(level)
    if not any(getattr(h, "_cmi", False) for h in logger.handlers):
        from rich.logging import RichHandler

        handler = RichHandler(
            console=err_console(), show_time=verbose, show_path=verbose, markup=False
        )
        handler._cmi = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    for h in logger.handlers:
        h.setLevel(level)


def info(message: str) -> None:
    """Print a status line to stderr unless ``--quiet``."""
    if not _state["quiet"]:
        err_console().print(message)


def warn(message: str) -> None:
    """Print a warning line to stderr."""
    err_console().print(f"[yellow]warning:[/yellow] {message}")
