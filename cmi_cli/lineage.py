"""The provenance record every artifact carries: what made it, from what, with which code.

A record is a plain JSON-able dict so that it can live inside a checkpoint that loads with
``torch.load(weights_only=True)``, in ONNX metadata, and in run folders alike.
"""

from __future__ import annotations

import datetime as dt
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


def code_version(project_root: Path | None = None) -> dict[str, Any]:
    """Return the versions of the code that makes an artifact.

    ``package`` is cmi-cli's own version; ``git_*`` describe the project (the work tree the
    command runs in), which holds the configs and data pointers.
    """
    import sys

    state = git_state(project_root)
    return {
        "package": f"cmi-cli {__version__}",
        "git_commit": state["commit"],
        "git_dirty": state["dirty"],
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
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
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:  # the serving image has no torch
        torch_version = None
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
        "code": {**code_version(project_root), "torch": torch_version},
        "metrics": metrics or {},
    }
    if parent is not None:
        record["parent"] = parent
    return record
