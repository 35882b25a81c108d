"""Typed errors for problems a user can fix.

Every error raised for bad input derives from :class:`CmiError`. The CLI prints such an error as
one line (the message, then the hint) and exits with ``exit_code``; anything else is a bug and
keeps its traceback under ``--verbose``.
"""

from __future__ import annotations


class CmiError(Exception):
    """A problem the user can fix, reported in one line without a traceback.

    Args:
        message: What is wrong, naming the file, option or value concerned.
        hint: What to run or change to fix it.
        exit_code: The process exit status the CLI uses for this error.
    """

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        """Return the message and the hint as a single line."""
        text = self.message.rstrip(".")
        return f"{text}. {self.hint}" if self.hint else text


class UsageError(CmiError):
    """An option or argument has a value that cannot work."""

    exit_code = 2


class NotAvailableError(CmiError):
    """A command that a later release fills in."""

    exit_code = 2


class DataError(CmiError):
    """A dataset is missing, malformed or of an unknown layout."""


class DvcError(CmiError):
    """DVC could not do what was asked (no repo, no remote, unreachable remote, ...)."""


class ConfigError(CmiError):
    """A configuration key, group or value is unknown or invalid."""

    exit_code = 2


class ArtifactError(CmiError):
    """A checkpoint, ONNX file or other artifact is missing, truncated or of the wrong kind."""
