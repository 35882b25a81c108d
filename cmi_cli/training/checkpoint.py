"""Reading checkpoints safely: no pickled code runs, and every failure is one clear line."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from cmi_cli.errors import ArtifactError, ConfigError


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a cmi checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: A ``.ckpt`` written by ``cmi train``.

    Returns:
        The checkpoint dict (``state_dict``, ``cmi_lineage``, Lightning's loop state...).

    Raises:
        ArtifactError: If the file is missing, truncated, not a checkpoint, holds objects
            other than tensors and plain values, or was not written by cmi.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint not found: {path}", hint="Check the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(
            f"{path} is not a loadable checkpoint ({_first_line(exc)})",
            hint="Pass a .ckpt written by 'cmi train'; a truncated copy must be fetched again",
        ) from None
    except (RuntimeError, KeyError, OSError, ValueError, IndexError) as exc:
        # torch.load reports a non-zip file or a damaged record in many ways (a legacy-format
        # KeyError, EINVAL from a short read, ...): all mean the file is not a checkpoint.
        raise ArtifactError(
            f"{path} is not a checkpoint or is truncated ({_first_line(exc)})",
            hint="Pass a .ckpt written by 'cmi train'",
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ArtifactError(f"{path} holds no model weights", hint="Pass a .ckpt from 'cmi train'")
    if "cmi_lineage" not in ckpt:
        raise ArtifactError(
            f"{path} has no cmi lineage record", hint="Pass a checkpoint written by 'cmi train'"
        )
    return ckpt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def load_model(path: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild the network of a checkpoint and load its weights.

    Returns:
        ``(model in eval mode, lineage record)``.

    Raises:
        ArtifactError: If the checkpoint is unreadable or its weights do not fit the recorded
            architecture.
    """
    from cmi_cli.models.registry import build_from_spec

    ckpt = load_checkpoint(path)
    lineage = ckpt["cmi_lineage"]
    try:
        model = build_from_spec(lineage["model"])
    except ConfigError as exc:
        # The record names an architecture this version cannot build: the file is at fault,
        # not the user's configuration.
        raise ArtifactError(
            f"{path} records a model that cannot be built ({exc.message})",
            hint="Use a checkpoint written by this version of cmi, or retrain",
        ) from None
    weights = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ArtifactError(
            f"weights of {path} do not fit architecture {lineage['model'].get('name')!r} "
            f"({_first_line(exc)})",
            hint="The checkpoint is damaged or was edited; retrain or use another one",
        ) from None
    model.eval()
    return model, lineage
