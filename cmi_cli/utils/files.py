"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, not from worker threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def temp_beside(path: Path, suffix: str = "") -> Path:
    """Create an empty temporary file in ``path``'s folder (so a later rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent
    )
    os.close(fd)
    return Path(tmp_name)


def publish(tmp: Path, dest: Path) -> Path:
    """Move a finished temporary file onto ``dest`` atomically, readable by others.

    mkstemp makes files private (0600); artifacts are meant to be read by others, e.g. a model
    mounted into a container that runs as another user.
    """
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, dest)
    return Path(dest)


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it into place on success.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic; on
    an exception it is removed and ``path`` is left untouched.

    Args:
        path: The file to create or replace.
        suffix: Suffix for the temporary name (some writers infer the format from it).
    """
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        if tmp.exists():
            publish(tmp, Path(path))
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
