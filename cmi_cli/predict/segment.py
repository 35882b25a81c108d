"""The per-batch function of ``cmi predict``: photos in, full-size masks and class rows out.

It is the same function whether local workers or a distributed engine (Ray Data, Spark) call
it: a :class:`~cmi_cli.serving.predictor.ServedModel` (one per worker, its own session),
encoded photos, and what to save. Preprocessing, inference and the overlay are the served
model's own, so a batch prediction equals what ``cmi serve`` answers for the same photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cmi_cli.classes import BACKGROUND_ID

if TYPE_CHECKING:
    from cmi_cli.serving.predictor import ServedModel

# 100 MP: any camera photo; a decompression bomb is refused from its header.
MAX_PIXELS = 100_000_000


@dataclass
class ClassStat:
    """One class found in one photo (pixels at the photo's size)."""

    id: int
    name: str
    pixels: int
    confidence_sum: float


@dataclass
class Segmented:
    """One photo's full-size prediction, or the reason it has none."""

    width: int = 0
    height: int = 0
    mask: np.ndarray | None = None
    confidence: np.ndarray | None = None
    rgb: np.ndarray | None = None
    classes: list[ClassStat] = field(default_factory=list)
    error: str = ""


def full_resolution(
    model: ServedModel, logits: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the photo-size class mask (uint8) and per-pixel confidence (float32).

    The one place that maps model-resolution logits to the photo's size, and the same one
    ``cmi serve`` uses (:meth:`~cmi_cli.serving.predictor.ServedModel.segment_full`): the
    logits are upsampled bilinearly to the photo's size before the argmax, so boundaries
    follow the photo's pixels rather than the model grid's blocks. The confidence is the max
    softmax probability of each photo pixel's interpolated logits, so it belongs to its class.

    Args:
        model: The served model.
        logits: ``[C, h, w]`` logits of one photo.
        width: The photo's width.
        height: The photo's height.
    """
    return model.segment_full(logits, width, height)


def class_stats(mask: np.ndarray, confidence: np.ndarray, names: Sequence[str]) -> list[ClassStat]:
    """Pixels and summed confidence of every class present in a mask, by class id."""
    flat = mask.ravel()
    counts = np.bincount(flat, minlength=len(names))
    sums = np.bincount(flat, weights=confidence.ravel().astype(np.float64), minlength=len(names))
    return [
        ClassStat(c, str(names[c]), int(counts[c]), float(sums[c]))
        for c in map(int, np.flatnonzero(counts))
    ]


def segment_bytes(
    model: ServedModel, blobs: Sequence[bytes | None], keep_rgb: bool = False
) -> list[Segmented]:
    """Segment encoded photos with one model call; a photo that fails gets its reason.

    Args:
        model: The served model (preprocessing, backend and classes).
        blobs: Encoded JPEG, PNG or WebP photos; ``None`` for one that could not be read.
        keep_rgb: Keep the decoded photo at full size (for overlays); otherwise a JPEG is
            decoded at reduced scale, as the model sees a small square anyway.

    Returns:
        One :class:`Segmented` per blob, in order.
    """
    from cmi_cli.serving.errors import ClientError
    from cmi_cli.serving.images import decode_photo

    out = [Segmented() for _ in blobs]
    photos: list[tuple[int, np.ndarray]] = []
    min_side = None if keep_rgb else model.image_size
    for i, data in enumerate(blobs):
        if data is None:
            out[i].error = "unreadable file"
            continue
        try:
            rgb, (out[i].width, out[i].height) = decode_photo(data, MAX_PIXELS, min_side)
        except ClientError as exc:
            out[i].error = exc.message.replace("the upload", "the file")
            continue
        photos.append((i, rgb))
    if not photos:
        return out
    batch = np.stack([model.preprocess(rgb) for _, rgb in photos])
    logits, _ = model.infer(batch)
    for (i, rgb), scores in zip(photos, logits, strict=True):
        seg = out[i]
        seg.mask, seg.confidence = full_resolution(model, scores, seg.width, seg.height)
        seg.classes = class_stats(seg.mask, seg.confidence, model.class_names)
        if keep_rgb:
            seg.rgb = rgb
    return out


def table_rows(image: str, seg: Segmented) -> list[dict[str, Any]]:
    """One table row per class of a segmented photo (see :data:`TABLE_COLUMNS`)."""
    total = seg.width * seg.height
    plate = sum(c.pixels for c in seg.classes if c.id != BACKGROUND_ID)
    return [
        {
            "image": image,
            "width": seg.width,
            "height": seg.height,
            "class_id": c.id,
            "class_name": c.name,
            "pixels": c.pixels,
            "share_of_plate": c.pixels / plate if plate and c.id != BACKGROUND_ID else None,
            "share_of_image": c.pixels / total,
            "mean_confidence": c.confidence_sum / c.pixels,
        }
        for c in seg.classes
    ]


TABLE_COLUMNS = (
    "image",
    "width",
    "height",
    "class_id",
    "class_name",
    "pixels",
    "share_of_plate",
    "share_of_image",
    "mean_confidence",
)
