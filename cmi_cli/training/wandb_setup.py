"""Weights & Biases: online when logged in, offline (to sync later) when not."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from cmi_cli.console import info


def wandb_logged_in() -> bool:
    """Return whether W&B credentials are available (env var or ``wandb login``'s netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    try:
        return netrc.netrc().authenticators(host.split("/")[0]) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(configured: str | None) -> str:
    """Pick the W&B mode: the config's, else ``WANDB_MODE``, else online iff logged in."""
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_logged_in() else "offline"


# Values this module put into the environment, so a later run in the same process (a sweep,
# quickstart) moves them to its own folder while a value the user set is left alone.
_OURS: dict[str, str] = {}


def keep_wandb_files_in(run_dir: Path) -> None:
    """Point W&B's data and cache folders into ``run_dir/wandb`` unless the user chose them.

    W&B stages a copy of every logged artifact file (each checkpoint, with ``log_model``)
    under ``WANDB_DATA_DIR`` (default ``~/.local/share/wandb/artifacts/staging``) and writes
    its service logs under ``WANDB_CACHE_DIR`` (``~/.cache/wandb``); outside the run they
    piled up, one checkpoint copy per run. Inside it they go with the run: an offline run's
    staged files are exactly what a later ``wandb sync`` uploads, and deleting the run
    deletes them.
    """
    base = Path(run_dir).resolve() / "wandb"
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache")):
        current = os.environ.get(var)
        if current is None or current == _OURS.get(var):
            os.environ[var] = _OURS[var] = str(base / sub)


def make_wandb_logger(cfg: dict[str, Any], run_dir: Path, run_name: str) -> Any:
    """Build Lightning's WandbLogger from the ``logger`` config group.

    Args:
        cfg: The logger config (project, entity, group, tags, mode, log_model).
        run_dir: The run folder; W&B's files go under ``run_dir/wandb``.
        run_name: The run's name, also its W&B id so a resumed run continues the same one.
    """
    from lightning.pytorch.loggers import WandbLogger

    mode = resolve_wandb_mode(cfg.get("mode"))
    keep_wandb_files_in(run_dir)
    if mode == "offline" and not cfg.get("mode") and not os.environ.get("WANDB_MODE"):
        info(
            f"W&B: not logged in, logging offline to {run_dir / 'wandb'} "
            f"(upload later with 'wandb sync {run_dir / 'wandb'}/offline-run-*')"
        )
    return WandbLogger(
        name=run_name,
        id=run_name.replace("/", "-"),
        project=cfg.get("project", "cmi"),
        entity=cfg.get("entity"),
        group=cfg.get("group"),
        tags=list(cfg.get("tags") or []),
        save_dir=str(run_dir),
        mode=mode,
        log_model=cfg.get("log_model", True),
        resume="allow",
    )
