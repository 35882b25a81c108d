"""Where a model's reference lies, and the reference an ONNX export carries beside it.

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

from cmi_cli.errors import ArtifactError, DataError
from cmi_cli.reference.run import reference_split, torch_predict
from cmi_cli.reference.table import REFERENCE_NAME, compute_features, load_table

log = logging.getLogger(__name__)


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
