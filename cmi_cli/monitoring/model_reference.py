"""A model's reference: where it lies beside the model, and how it is made.

The reference of a checkpoint is ``<run folder>/reference.csv``, written at the end of
training from the best weights' predictions on the validation split. That of ``model.onnx``
is named in its lineage (``reference: {file, sha256, rows, columns}``) and lies beside it as
``model.reference.csv``, copied there by ``cmi export onnx``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.errors import ArtifactError, DataError
from cmi_cli.monitoring.reference import (
    REFERENCE_NAME,
    FeatureTable,
    Predict,
    compute_features,
    load_table,
    save_table,
)

log = logging.getLogger(__name__)


def reference_split(lineage: dict[str, Any]) -> str | None:
    """Return the split a model's drift reference is computed on.

    The held-out split the lineage names (``data.reference_split``: the test split, which the
    model never trained on and whose scores ``cmi evaluate`` reports); older models name
    only ``data.val_split``.
    """
    data = lineage.get("data") or {}
    split = data.get("reference_split") or data.get("val_split")
    return str(split) if split else None


def reference_path_for(model: Path, lineage: dict[str, Any] | None = None) -> Path:
    """Return where the reference of a checkpoint, run folder or ONNX model lies.

    Args:
        model: The model file or run folder.
        lineage: The ONNX model's lineage when already read (saves opening the model again).

    Raises:
        ArtifactError: If the model has no reference file beside it.
    """
    model = Path(model)
    candidates: list[Path] = []
    if model.is_dir():
        candidates.append(model / REFERENCE_NAME)
    elif model.suffix == ".onnx":
        recorded = _onnx_reference_name(model, lineage)
        if recorded:
            candidates.append(model.parent / recorded)
        candidates.append(model.with_name(f"{model.stem}.{REFERENCE_NAME}"))
    else:
        folder = model.parent.parent if model.parent.name == "checkpoints" else model.parent
        candidates += [folder / REFERENCE_NAME, model.parent / REFERENCE_NAME]
    for path in candidates:
        if path.is_file():
            return path
    raise ArtifactError(
        f"no reference features found for {model} (looked for {candidates[0]})",
        hint="Train with a current cmi (it saves reference.csv), or pass --reference DATA_DIR",
        exit_code=2,
    )


def _onnx_reference_name(model: Path, lineage: dict[str, Any] | None) -> str | None:
    from cmi_cli.export.metadata import read_lineage

    try:
        ref = (lineage if lineage is not None else read_lineage(model)).get("reference") or {}
    except ArtifactError:
        return None
    name = ref.get("file") if isinstance(ref, dict) else None
    # Only a bare file name: a lineage must not send us elsewhere on the disk.
    return Path(str(name)).name if name else None


def load_predictor(model: Path, threads: int | None = None) -> tuple[Predict, dict[str, Any]]:
    """Open a checkpoint (torch) or ONNX model (ONNX Runtime) as ``(predict, lineage)``."""
    model = Path(model)
    if model.suffix == ".onnx":
        from cmi_cli.export.ort_predict import OnnxPredictor

        onnx_model = OnnxPredictor(model, threads=threads)
        static = isinstance(onnx_model.input_shape[0], int) and onnx_model.input_shape[0] > 0

        def predict_onnx(x: np.ndarray) -> np.ndarray:
            if not static:
                return onnx_model.predict(x)
            return np.concatenate([onnx_model.predict(x[i : i + 1]) for i in range(len(x))])

        return predict_onnx, onnx_model.lineage
    from cmi_cli.training.checkpoint import load_model

    net, lineage = load_model(model)
    return torch_predict(net), lineage


def reference_record(
    path: Path, table: FeatureTable, relative_to: Path | None = None
) -> dict[str, Any]:
    """Return ``{file, sha256, rows, columns}`` describing a saved reference, for lineages."""
    from cmi_cli.export.metadata import sha256_file

    path = Path(path)
    name = str(path.relative_to(relative_to)) if relative_to is not None else path.name
    return {
        "file": name,
        "sha256": sha256_file(path),
        "rows": len(table),
        "columns": list(table.columns),
    }


def save_model_reference(
    model: Path,
    out: Path,
    data_root: Path | None = None,
    split: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Compute a model's reference on its validation split and save it to ``out``.

    Args:
        model: A checkpoint or ONNX model (its lineage names the data and preprocessing).
        out: The CSV to write.
        data_root: Dataset; default the one in the lineage.
        split: Split; default the lineage's validation split, else the layout's.
        batch_size: Images per forward pass.
        limit: At most this many images.

    Returns:
        ``(path, reference record)``.
    """
    from cmi_cli.training.evaluate import resolve_eval_data

    predict, lineage = load_predictor(model)
    root = resolve_eval_data(lineage, data_root)
    split = split or reference_split(lineage)
    table = compute_features(
        root, split, lineage=lineage, predict=predict, batch_size=batch_size, limit=limit
    )
    path = save_table(table, out)
    return path, reference_record(path, table)


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


def reference_for_export(
    checkpoint: Path,
    onnx_path: Path,
    net: Any,
    lineage: dict[str, Any],
    data_root: Path | None = None,
) -> tuple[bytes, dict[str, Any]] | None:
    """Return the reference to place beside an ONNX export, and its lineage record.

    The checkpoint's saved reference is reused byte for byte; a checkpoint without one (made
    by an older cmi) gets one computed now with ``net``, when its data is here.

    Returns:
        ``(CSV bytes, {file, sha256, rows, columns})`` with ``file`` =
        ``<onnx stem>.reference.csv``, or None when no reference can be had.
    """
    try:
        table = load_table(reference_path_for(checkpoint))
    except (ArtifactError, DataError):
        try:
            from cmi_cli.training.evaluate import resolve_eval_data

            root = resolve_eval_data(lineage, data_root)
            split = reference_split(lineage)
            table = compute_features(root, split, lineage=lineage, predict=torch_predict(net),
                                     show_progress=False)  # fmt: skip
        except DataError as exc:
            log.warning("no drift reference for the export: %s", exc)
            return None
    data = table.to_csv().encode("utf-8")
    return data, {
        "file": f"{Path(onnx_path).stem}.{REFERENCE_NAME}",
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": len(table),
        "columns": list(table.columns),
    }
