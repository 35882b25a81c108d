"""``cmi evaluate``: metrics of a trained model on a dataset split.

The loop takes a ``predict`` function (batch of normalised images -> logits as numpy), so the
same code scores a checkpoint and, later, an ONNX model: same data, same metrics.

Two resolutions can be scored:

* ``label`` (the default, as FoodSeg103 papers report): each photo is resized to the model's
  input, its logits are upsampled bilinearly back to the annotation's own size
  (:func:`cmi_cli.export.upsample.upsample_labels`, numpy) and compared with the untouched
  mask;
* ``model``: image and mask are both squashed to the training size (mask by nearest
  neighbour), as validation during training scores them; cheaper, and comparable with
  ``val/miou``.

The default split is the held-out ``test`` split (the parquet export's ``validation``);
``val`` is the share of ``train`` that picked the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.console import is_quiet
from cmi_cli.errors import DataError, UsageError

Predict = Callable[[np.ndarray], np.ndarray]
RESOLUTIONS = ("label", "model")
RESOLUTION_TEXT = {
    "label": "each annotation's own size (logits upsampled bilinearly)",
    "model": "the model's input size (masks resized by nearest neighbour)",
}


@dataclass
class EvalResult:
    """Scores of a model on one split, with what was evaluated."""

    model_path: Path
    data_root: Path
    split: str
    num_images: int
    scores: Any  # cmi_cli.training.metrics.SegmentationScores
    resolution: str = "label"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe record."""
        best, worst = self.scores.best_and_worst(5)
        return {
            "model": str(self.model_path),
            "data": str(self.data_root),
            "split": self.split,
            "split_role": split_role(self.split),
            "num_images": self.num_images,
            "resolution": self.resolution,
            "scored_at": RESOLUTION_TEXT.get(self.resolution, self.resolution),
            **self.scores.to_dict(),
            "best_classes": [{"name": n, "iou": v} for n, v in best],
            "worst_classes": [{"name": n, "iou": v} for n, v in worst],
        }


def split_role(split: str) -> str:
    """Say what a split is for: ``validation`` (picks checkpoints), ``test`` or ``train``."""
    from cmi_cli.data.split import parse_val_split

    if parse_val_split(split) is not None:
        return "validation"
    return {"train": "train", "test": "test", "validation": "test"}.get(split, split)


def check_resolution(resolution: str) -> str:
    """Return ``resolution`` if it is one of :data:`RESOLUTIONS`.

    Raises:
        UsageError: Otherwise.
    """
    if resolution not in RESOLUTIONS:
        raise UsageError(
            f"unknown resolution {resolution!r}", hint=f"Use one of {', '.join(RESOLUTIONS)}"
        )
    return resolution


def resolve_eval_data(lineage: dict[str, Any], data_root: Path | None) -> Path:
    """Return the dataset to evaluate on: the one given, else the one the model was trained on."""
    if data_root is not None:
        return Path(data_root)
    data = lineage.get("data", {})
    recorded = Path(str(data.get("root", "data/foodseg103")))
    # The configured root (relative to the project the command runs in), else the absolute
    # path the data had when the model was trained.
    for candidate in (recorded, Path(str(data.get("path", "")))):
        if str(candidate) and candidate.is_dir():
            return candidate
    raise DataError(
        f"the model's training data {recorded} is not here",
        hint="Pass --data ROOT (run from the project folder, or 'cmi data pull' first)",
    )


def evaluate_predictor(
    predict: Predict,
    data_root: Path,
    split: str | None,
    lineage: dict[str, Any],
    batch_size: int = 8,
    resolution: str = "label",
) -> tuple[str, int, Any]:
    """Score ``predict`` on a split with the preprocessing the model was trained with.

    Args:
        predict: Normalised ``[N, 3, S, S]`` float32 batch -> ``[N, C, S, S]`` logits.
        data_root: The dataset.
        split: A stored split, ``val``/``val@F`` (carved from train), or ``None`` for test.
        lineage: The model's lineage (class names, preprocessing).
        batch_size: Images per ``predict`` call.
        resolution: ``label`` (scores at each annotation's size) or ``model``.

    Returns:
        ``(split, number of images, SegmentationScores)``.
    """
    import torch

    from cmi_cli.data.batch_transforms import normalize_batch
    from cmi_cli.data.dataset import SegmentationDataset
    from cmi_cli.data.split import open_split
    from cmi_cli.training.metrics import compute_metrics, update_confusion

    check_resolution(resolution)
    source, split = open_split(Path(data_root), split, hint="Pass --split with one of those")
    class_names = list(lineage["class_names"])
    if len(source.class_names) != len(class_names):
        raise DataError(
            f"dataset {data_root} has {len(source.class_names)} classes, the model "
            f"{len(class_names)}",
            hint="Evaluate on data with the model's class list",
        )
    pre = lineage["preprocessing"]
    dataset = SegmentationDataset(source, split, int(pre["image_size"]))
    if len(dataset) == 0:
        raise DataError(f"split {split!r} of {data_root} is empty", hint="Check the dataset")
    if resolution == "label":
        conf_np = _score_at_label_size(predict, dataset, class_names, pre, batch_size)
        return split, len(dataset), compute_metrics(conf_np, class_names)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    conf = torch.zeros(len(class_names), len(class_names), dtype=torch.int64)
    from rich.progress import Progress

    from cmi_cli.console import err_console

    with Progress(console=err_console(), transient=True, disable=is_quiet()) as progress:
        task = progress.add_task(f"evaluating on {split}", total=len(dataset))
        for images, masks in loader:
            logits = predict(normalize_batch(images, pre["mean"], pre["std"]).numpy())
            pred = torch.from_numpy(np.asarray(logits).argmax(axis=1))
            update_confusion(conf, pred, masks.to(torch.int64), len(class_names), 255)
            progress.advance(task, len(images))
    return split, len(dataset), compute_metrics(conf, class_names)


def _score_at_label_size(
    predict: Predict,
    dataset: Any,
    class_names: list[str],
    pre: dict[str, Any],
    batch_size: int,
) -> np.ndarray:
    """Confusion matrix of predictions upsampled to each untouched annotation's size."""
    from rich.progress import Progress

    from cmi_cli.console import err_console
    from cmi_cli.data.transforms import normalize, resize_image
    from cmi_cli.export.upsample import upsample_labels
    from cmi_cli.training.metrics import update_confusion_np

    n, size = len(class_names), int(pre["image_size"])
    conf = np.zeros((n, n), dtype=np.int64)
    items = dataset.items
    with Progress(console=err_console(), transient=True, disable=is_quiet()) as progress:
        task = progress.add_task(f"evaluating on {dataset.split}", total=len(items))
        for start in range(0, len(items), batch_size):
            pairs = [dataset.source.read(item) for item in items[start : start + batch_size]]
            batch = np.stack(
                [
                    normalize(resize_image(img, size, size), pre["mean"], pre["std"])
                    for img, _ in pairs
                ]
            )
            logits = np.asarray(predict(batch))
            for (_, mask), scores in zip(pairs, logits, strict=True):
                pred = upsample_labels(scores, *mask.shape)
                update_confusion_np(conf, pred, mask, n, 255)
            progress.advance(task, len(pairs))
    return conf


def evaluate_checkpoint(
    path: Path,
    data_root: Path | None = None,
    split: str | None = None,
    batch_size: int = 8,
    resolution: str = "label",
) -> EvalResult:
    """Evaluate a ``cmi train`` checkpoint on a split (default: the test split).

    Args:
        path: The checkpoint.
        data_root: Dataset to use; default: the one recorded in the checkpoint's lineage.
        split: Split name; default: the held-out test split (``val`` is the carved one).
        batch_size: Images per forward pass.
        resolution: ``label`` (each annotation's size, the default) or ``model``.
    """
    import torch

    from cmi_cli.training.checkpoint import load_model

    model, lineage = load_model(path)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    root = resolve_eval_data(lineage, data_root)
    split, n, scores = evaluate_predictor(predict, root, split, lineage, batch_size, resolution)
    return EvalResult(Path(path), root, split, n, scores, resolution)


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
    from cmi_cli.export.ort_predict import OnnxPredictor

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


def default_eval_json(model_path: Path, split: str) -> Path:
    """Where the JSON of an evaluation goes by default: the run folder, else beside the model."""
    path = Path(model_path)
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return folder / f"eval-{path.stem}-{split}.json"
