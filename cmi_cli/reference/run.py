"""A trained network's reference, saved at the end of training as ``<run>/reference.csv``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.reference.table import (
    REFERENCE_NAME,
    FeatureTable,
    Predict,
    compute_features,
    save_table,
)


def reference_record(
    path: Path, table: FeatureTable, relative_to: Path | None = None
) -> dict[str, Any]:
    """Return ``{file, sha256, rows, columns}`` describing a saved reference, for lineages."""
    path = Path(path)
    name = str(path.relative_to(relative_to)) if relative_to is not None else path.name
    return {
        "file": name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "rows": len(table),
        "columns": list(table.columns),
    }


def torch_predict(net: Any) -> Predict:
    """Wrap a torch network as ``predict``: numpy in, numpy out, on the network's device."""
    import torch

    device = next(net.parameters()).device
    net.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = net(torch.from_numpy(np.ascontiguousarray(x)).to(device))
        return out.float().cpu().numpy()

    return predict


def reference_split(lineage: dict[str, Any]) -> str | None:
    """Return the split a model's drift reference is computed on.

    The split the lineage names (``data.reference_split``: the training split); models made
    before it was recorded name only ``data.val_split``.
    """
    data = lineage.get("data") or {}
    split = data.get("reference_split") or data.get("val_split")
    return str(split) if split else None


def save_run_reference(
    net: Any,
    lineage: dict[str, Any],
    run_dir: Path,
    data_root: Path | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Save a trained network's reference as ``<run_dir>/reference.csv`` (end of training).

    Args:
        net: The trained network (predictions run on the device it is on).
        lineage: Its lineage (preprocessing, class names, data root and validation split).
        run_dir: The run folder.
        data_root: Dataset; default the lineage's ``data.root``.
        split: Split; default the lineage's ``data.reference_split`` (else ``val_split``).
        limit: At most this many images (the run's ``data.limit``).

    Returns:
        The reference record (``file`` relative to ``run_dir``, ``sha256``, ``rows``, ...).
    """
    data = lineage.get("data") or {}
    table = compute_features(
        Path(data_root or str(data.get("root", "data/foodseg103"))),
        split or reference_split(lineage),
        lineage=lineage,
        predict=torch_predict(net),
        limit=limit,
        show_progress=False,
    )
    path = save_table(table, Path(run_dir) / REFERENCE_NAME)
    return reference_record(path, table)
