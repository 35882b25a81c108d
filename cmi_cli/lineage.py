"""The provenance record every artifact carries: what made it, from what, with which code.

A record is a plain JSON-able dict so that it can live inside a checkpoint that loads with
``torch.load(weights_only=True)``, in ONNX metadata, and in run folders alike.
"""

from __future__ import annotations

import datetime as dt
import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

from cmi_cli import __version__

LINEAGE_FORMAT = 1


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Return the git commit and dirtiness of the repository holding ``path``.

    Args:
        path: Any path inside the work tree; the cwd by default.

    Returns:
        ``{"commit": sha or None, "dirty": bool or None}``; both None outside a git repo.
    """
    cwd = Path(path) if path is not None else Path.cwd()
    if cwd.is_file():
        cwd = cwd.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


# The libraries whose version changes what an artifact holds; read from the installed
# distributions (not ``torch.__version__``, which adds a local tag such as ``+cpu``) so that
# every record of one run names the same strings, with or without the library imported.
VERSIONED = ("torch", "onnx", "onnxruntime")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """Return the installed versions of :data:`VERSIONED` (None where not installed).

    Every record names versions through this one function, so the records of one run agree.
    """
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # the serving image has no torch
            found[name] = None
    return found


@functools.lru_cache(maxsize=1)
def package_commit() -> str | None:
    """The git commit of cmi-cli's own source when it runs from a checkout, else None."""
    return git_state(Path(__file__).resolve().parent)["commit"]


def code_version(project_root: Path | None = None) -> dict[str, Any]:
    """Return the versions of the code that makes an artifact.

    ``package`` (and ``package_commit`` from a source checkout) is cmi-cli's own code;
    ``git_*`` describe the project holding ``project_root`` (a folder or any file in it, such
    as the artifact's parent), which holds the configs and data pointers.
    """
    import sys

    state = git_state(project_root)
    return {
        "package": f"cmi-cli {__version__}",
        "package_commit": package_commit(),
        "git_commit": state["commit"],
        "git_dirty": state["dirty"],
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "torch": library_versions()["torch"],
    }


def now_iso() -> str:
    """Return the current UTC time in ISO 8601 with seconds."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def make_lineage(
    *,
    kind: str,
    class_names: list[str],
    preprocessing: dict[str, Any],
    model: dict[str, Any],
    config: dict[str, Any],
    data: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    project_root: Path | None = None,
    parent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the lineage record of a new artifact.

    Args:
        kind: What the artifact is (``checkpoint``, ``onnx``, ...).
        class_names: Class names by id.
        preprocessing: Input size, mean, std, resize method and channel order.
        model: Architecture name and hyper-parameters (enough to rebuild it).
        config: The composed configuration, resolved to plain values.
        data: Where the training data came from and its DVC md5.
        metrics: Evaluation metrics of the artifact, if known.
        project_root: The project whose git state is recorded.
        parent: The lineage or identity of the artifact this one was derived from.
    """
    record: dict[str, Any] = {
        "format": LINEAGE_FORMAT,
        "kind": kind,
        "created_at": now_iso(),
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "preprocessing": preprocessing,
        "model": model,
        "config": config,
        "data": data,
        "code": code_version(project_root),
        "metrics": metrics or {},
    }
    if parent is not None:
        record["parent"] = parent
    return record
