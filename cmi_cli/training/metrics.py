"""Segmentation metrics from a confusion matrix, computed as mmsegmentation does.

Rows of the confusion matrix are ground-truth classes, columns predicted classes. Pixels labelled
``ignore_index`` are left out. A class takes part in the mean IoU when it occurs in the ground
truth or in the prediction of the evaluated split (union > 0); other classes have IoU NaN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from cmi_cli.classes import IGNORE_INDEX
from cmi_cli.errors import DataError


def _check_ids(what: str, low: int, high: int, num_classes: int, ignore_index: int) -> None:
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise DataError(
            f"{what} {bad} is outside 0..{num_classes - 1} (ignore index {ignore_index})",
            hint="Check data.num_classes and the masks with `cmi data validate`.",
        )


def update_confusion(
    conf: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Add the pixels of one batch to a confusion matrix, in place.

    Args:
        conf: int64 matrix [C, C] (rows ground truth, columns prediction), updated in place.
        pred: Predicted class ids [N, H, W].
        target: Ground-truth class ids [N, H, W]; ``ignore_index`` pixels are skipped.
        num_classes: C.
        ignore_index: Label of pixels that do not count.

    Returns:
        ``conf``, for chaining.

    Raises:
        DataError: Shapes differ or a label is outside ``0..C-1``.
    """
    if pred.shape != target.shape:
        raise DataError(
            f"Prediction shape {tuple(pred.shape)} differs from mask shape {tuple(target.shape)}",
            hint="Masks must have the same height and width as their images.",
        )
    valid = target != ignore_index
    t = target[valid].long()
    p = pred[valid].long()
    if t.numel():
        for what, ids in (("Mask label", t), ("Predicted class", p)):
            low, high = torch.aminmax(ids)
            _check_ids(what, int(low), int(high), num_classes, ignore_index)
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    conf += counts.reshape(num_classes, num_classes).to(conf.device, torch.int64)
    return conf


def update_confusion_np(
    conf: np.ndarray,
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Numpy twin of :func:`update_confusion`, for ONNX Runtime evaluation without torch."""
    if pred.shape != target.shape:
        raise DataError(
            f"Prediction shape {pred.shape} differs from mask shape {target.shape}",
            hint="Masks must have the same height and width as their images.",
        )
    valid = target != ignore_index
    t = target[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if t.size:
        for what, ids in (("Mask label", t), ("Predicted class", p)):
            _check_ids(what, int(ids.min()), int(ids.max()), num_classes, ignore_index)
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    conf += counts.reshape(num_classes, num_classes).astype(np.int64)
    return conf


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _nanmean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


@dataclasses.dataclass
class SegmentationScores:
    """Scores of one evaluated split; per-class lists hold NaN for classes that do not count.

    Attributes:
        miou: Mean IoU over classes in the ground truth or the prediction (union > 0).
        pixel_accuracy: Correct pixels over all counted pixels.
        mean_class_accuracy: Mean recall over classes present in the ground truth.
        per_class_iou: IoU per class id, NaN where union is 0.
        per_class_accuracy: Recall per class id, NaN where the class is not in the ground truth.
        class_names: Name per class id.
        num_pixels: Counted (non-ignored) pixels.
    """

    miou: float
    pixel_accuracy: float
    mean_class_accuracy: float
    per_class_iou: list[float]
    per_class_accuracy: list[float]
    class_names: list[str]
    num_pixels: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe mapping; NaN becomes ``None``."""
        return {
            "miou": _nan_to_none(self.miou),
            "pixel_accuracy": _nan_to_none(self.pixel_accuracy),
            "mean_class_accuracy": _nan_to_none(self.mean_class_accuracy),
            "per_class_iou": [_nan_to_none(v) for v in self.per_class_iou],
            "per_class_accuracy": [_nan_to_none(v) for v in self.per_class_accuracy],
            "class_names": list(self.class_names),
            "num_pixels": self.num_pixels,
        }

    def best_and_worst(self, k: int = 5) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """Return the ``k`` classes with the highest and the lowest IoU among those that count.

        Args:
            k: How many classes in each list.

        Returns:
            ``(best, worst)``: lists of ``(class_name, iou)``, best first and worst first.
        """
        scored = [
            (name, iou)
            for name, iou in zip(self.class_names, self.per_class_iou, strict=True)
            if not math.isnan(iou)
        ]
        ranked = sorted(scored, key=lambda item: item[1], reverse=True)
        return ranked[:k], ranked[::-1][:k]


def compute_metrics(
    conf: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None
) -> SegmentationScores:
    """Compute IoU and accuracy scores from a confusion matrix.

    Args:
        conf: Matrix [C, C], rows ground truth and columns prediction.
        class_names: Name per class id; ``class_<i>`` when omitted.

    Returns:
        The scores.

    Raises:
        DataError: The matrix is not square or the names do not match its size.
    """
    matrix = conf.detach().cpu().numpy() if isinstance(conf, torch.Tensor) else np.asarray(conf)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(f"Confusion matrix must be square, got shape {matrix.shape}")
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(n)]
    if len(names) != n:
        raise DataError(
            f"Got {len(names)} class names for a {n}-class confusion matrix",
            hint="Use the class names of the dataset the model was trained on.",
        )
    m = matrix.astype(np.float64)
    tp = np.diag(m)
    gt = m.sum(axis=1)
    predicted = m.sum(axis=0)
    union = gt + predicted - tp
    total = m.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(gt > 0, tp / gt, np.nan)
    return SegmentationScores(
        miou=_nanmean(iou),
        pixel_accuracy=float(tp.sum() / total) if total > 0 else math.nan,
        mean_class_accuracy=_nanmean(recall),
        per_class_iou=[float(v) for v in iou],
        per_class_accuracy=[float(v) for v in recall],
        class_names=names,
        num_pixels=int(matrix.sum()),
    )


class SegmentationMetric(Metric):
    """Confusion matrix accumulated over batches and summed over DDP ranks by torchmetrics.

    ``update`` takes logits [N, C, H, W] or class ids [N, H, W]; ``compute`` returns the
    synchronised int64 matrix; :meth:`scores` turns it into :class:`SegmentationScores`.

    Args:
        num_classes: Number of classes C.
        ignore_index: Mask label of pixels that do not count.
        class_names: Names used by :meth:`scores`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.confmat: torch.Tensor
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch; ``preds`` are logits [N, C, H, W] or class ids [N, H, W]."""
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(dim=1)
        update_confusion(self.confmat, preds, target, self.num_classes, self.ignore_index)

    def compute(self) -> torch.Tensor:
        """Return the confusion matrix summed over batches (and ranks)."""
        return self.confmat

    def scores(self) -> SegmentationScores:
        """Return the scores of everything accumulated since the last reset."""
        return compute_metrics(self.compute(), self.class_names)
