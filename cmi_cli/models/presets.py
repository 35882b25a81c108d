"""The model presets a user picks by name (``model=mobile``), read from the config tree.

Reads the YAML files of the ``model`` group (packaged, then the project's ``configs/model``,
which may add or shadow presets) without Hydra and without torch, so ``cmi info --models`` is
as quick as the rest of the CLI's light commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cmi_cli.config import packaged_config_dir


def _read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return data if isinstance(data, dict) else {}


def _description(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("#") and text.lstrip("# ").strip():
            return text.lstrip("# ").strip()
    return ""


def _resolved(folders: list[Path], name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return a preset's values with its ``defaults`` (other model entries) merged below."""
    path = next((f / f"{name}.yaml" for f in folders if (f / f"{name}.yaml").is_file()), None)
    if path is None or name in seen:
        return {}
    data = _read(path)
    merged: dict[str, Any] = {}
    for entry in data.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_":
            merged.update(_resolved(folders, entry, (*seen, name)))
    merged.update(data)
    return merged


def model_presets(project_root: Path | None = None) -> list[dict[str, Any]]:
    """Return every option of the ``model`` config group with what it builds.

    Args:
        project_root: A project whose ``configs/model`` adds presets; the cwd when None.

    Returns:
        One mapping per preset, sorted by name: ``preset``, ``model`` (registered name),
        ``architecture``, ``encoder``, ``weights`` and ``description`` (its first comment).
    """
    folders = []
    project = (project_root or Path.cwd()) / "configs" / "model"
    if project.is_dir():
        folders.append(project)
    folders.append(packaged_config_dir() / "model")
    names = sorted({p.stem for f in folders for p in f.glob("*.yaml")})
    rows = []
    for name in names:
        values = _resolved(folders, name)
        path = next(f / f"{name}.yaml" for f in folders if (f / f"{name}.yaml").is_file())
        rows.append(
            {
                "preset": name,
                "model": values.get("name"),
                "architecture": values.get("arch", values.get("name")),
                "encoder": values.get("encoder"),
                "weights": values.get("encoder_weights", "none"),
                "description": _description(path),
            }
        )
    return rows
