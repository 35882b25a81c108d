"""A model's reference: where it lies beside the model, and how it is made.

The reference of a checkpoint is ``<run folder>/reference.csv``, written at the end of
training from the best weights' predictions on the training split. That of ``model.onnx``
is named in its lineage (``reference: {file, sha256, rows, columns}``) and lies beside it as
``model.reference.csv``, copied there by ``cmi export onnx``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.export.reference import (  # noqa: F401
    reference_for_export,
    reference_path_for,
)
from cmi_cli.reference.run import (  # noqa: F401
    reference_record,
    reference_split,
    save_run_reference,
    torch_predict,
)
from cmi_cli.reference.table import Predict, compute_features, save_table

log = logging.getLogger(__name__)


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


def save_model_reference(
    model: Path,
    out: Path,
    data_root: Path | None = None,
    split: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Compute a model's reference on its reference split and save it to ``out``.

    Args:
        model: A checkpoint or ONNX model (its lineage names the data and preprocessing).
        out: The CSV to write.
        data_root: Dataset; default the one in the lineage.
        split: Split; default the lineage's reference split (its training data).
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
