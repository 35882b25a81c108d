"""``cmi evaluate`` of an ONNX model, and of either kind of model by its file name.

It lives in ``export`` (not beside :func:`~cmi_cli.training.evaluate.evaluate_checkpoint`)
because it opens the model with ONNX Runtime through ``export.ort_predict``: training never
imports export.
"""

from __future__ import annotations

from pathlib import Path

from cmi_cli.export.ort_predict import OnnxPredictor
from cmi_cli.training.evaluate import (
    EvalResult,
    check_resolution,
    evaluate_checkpoint,
    evaluate_predictor,
    resolve_eval_data,
)


def evaluate_onnx(
    path: Path,
    data_root: Path | None = None,
    split: str | None = None,
    batch_size: int = 8,
    resolution: str = "label",
) -> EvalResult:
    """Evaluate an ONNX model from ``cmi export onnx`` with ONNX Runtime on a split.

    The same loop, data and preprocessing as :func:`evaluate_checkpoint`, so the scores of a
    model and of its export are directly comparable.

    Args:
        path: The ``.onnx`` file (its lineage gives classes, preprocessing and data).
        data_root: Dataset to use; default: the one recorded in the model's lineage.
        split: Split name; default: the held-out test split (``val`` is the carved one).
        batch_size: Images per run (a static model runs one image at a time).
        resolution: ``label`` (each annotation's size, the default) or ``model``.
    """
    predictor = OnnxPredictor(path)
    if isinstance(predictor.input_shape[0], int) and predictor.input_shape[0] > 0:
        batch_size = predictor.input_shape[0]
    root = resolve_eval_data(predictor.lineage, data_root)
    split, n, scores = evaluate_predictor(
        predictor.predict, root, split, predictor.lineage, batch_size, resolution
    )
    return EvalResult(Path(path), root, split, n, scores, resolution)


def evaluate_model(
    path: Path,
    data_root: Path | None = None,
    split: str | None = None,
    batch_size: int = 8,
    resolution: str = "label",
) -> EvalResult:
    """Evaluate a checkpoint or (by its ``.onnx`` suffix) an ONNX model."""
    check_resolution(resolution)
    if Path(path).suffix == ".onnx":
        return evaluate_onnx(path, data_root, split, batch_size, resolution)
    return evaluate_checkpoint(path, data_root, split, batch_size, resolution)
