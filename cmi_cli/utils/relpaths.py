"""Paths shown to clients as names relative to the model's folder.

The lineage of a model records where its checkpoint and data lay on the machine that made it;
an API should not publish a server's absolute paths, so they are answered relative to the
folder of the served model (``checkpoints/best.ckpt``, ``../../data/foodseg103``).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any


def relative_name(value: str, folder: Path) -> str:
    """Return ``value`` relative to ``folder`` when it is an absolute path, else unchanged."""
    if not (PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()):
        return value
    if "://" in value or "\n" in value:
        return value
    try:
        return Path(os.path.relpath(value, folder)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(value).name


def relative_paths(obj: Any, folder: Path) -> Any:
    """A copy of a JSON-like ``obj`` with every absolute path made relative to ``folder``."""
    if isinstance(obj, dict):
        return {k: relative_paths(v, folder) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v, folder) for v in obj]
    if isinstance(obj, str):
        return relative_name(obj, folder)
    return obj
