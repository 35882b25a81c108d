"""Cheap numbers that describe a photo and a prediction, for the prediction log and drift checks.

Image features are computed on a copy downscaled to at most :data:`FEATURE_SIDE` pixels on the
long side, so they cost the same for a thumbnail and a 12 MP photo and are comparable between
them (sharpness in particular depends on the scale it is measured at). Only numpy and Pillow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

FEATURE_SIDE = 256
# ITU-R 601 luma, as Pillow's "L" mode.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Pixels less saturated than this have no meaningful hue.
_MIN_HUE_SATURATION = 0.1


def _downscale(rgb: np.ndarray, side: int = FEATURE_SIDE) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2))


def laplacian_variance(gray: np.ndarray) -> float:
    """Return the variance of the 4-neighbour Laplacian of a 2-D image (a focus measure)."""
    g = gray.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def colourfulness(rgb: np.ndarray) -> float:
    """Return Hasler and Süsstrunk's colourfulness metric of an RGB image (0..255 scale)."""
    img = rgb.astype(np.float32)
    rg = img[..., 0] - img[..., 1]
    yb = 0.5 * (img[..., 0] + img[..., 1]) - img[..., 2]
    sigma = float(np.hypot(rg.std(), yb.std()))
    mu = float(np.hypot(rg.mean(), yb.mean()))
    return sigma + 0.3 * mu


def _hue_stats(hsv: np.ndarray) -> tuple[float, float]:
    """Saturation-weighted circular mean and standard deviation of hue, in degrees."""
    sat = hsv[..., 1].astype(np.float32) / 255
    weights = np.where(sat >= _MIN_HUE_SATURATION, sat, 0)
    total = float(weights.sum())
    if total <= 0:
        return 0.0, 0.0
    angle = hsv[..., 0].astype(np.float32) * np.float32(2 * np.pi / 256)
    c = float((np.cos(angle) * weights).sum()) / total
    s = float((np.sin(angle) * weights).sum()) / total
    r = min(1.0, float(np.hypot(c, s)))
    mean = float(np.degrees(np.arctan2(s, c))) % 360
    std = float(np.degrees(np.sqrt(-2 * np.log(r)))) if r > 0 else 180.0
    return mean, std


def image_features(rgb: np.ndarray) -> dict[str, float]:
    """Describe a photo with a few scale-independent numbers.

    Args:
        rgb: ``HxWx3`` uint8 RGB image.

    Returns:
        ``width``, ``height``, ``aspect`` (w/h), ``brightness`` and ``contrast`` (mean and
        standard deviation of luma, 0..1), ``saturation`` (mean HSV saturation, 0..1),
        ``colourfulness`` (Hasler-Süsstrunk), ``sharpness`` (variance of the Laplacian of the
        grey image downscaled to 256 px), ``hue_mean`` and ``hue_std`` (circular, degrees,
        weighted by saturation).

    Raises:
        ValueError: If ``rgb`` is not an ``HxWx3`` uint8 array.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    small = _downscale(rgb)
    luma = small.astype(np.float32) @ _LUMA
    hsv = np.asarray(Image.fromarray(small).convert("HSV"))
    hue_mean, hue_std = _hue_stats(hsv)
    return {
        "width": float(w),
        "height": float(h),
        "aspect": float(w) / float(h) if h else 0.0,
        "brightness": float(luma.mean()) / 255,
        "contrast": float(luma.std()) / 255,
        "saturation": float(hsv[..., 1].mean()) / 255,
        "colourfulness": colourfulness(small),
        "sharpness": laplacian_variance(luma),
        "hue_mean": hue_mean,
        "hue_std": hue_std,
    }


@dataclass(frozen=True)
class SoftmaxSummary:
    """Per-pixel outputs of a segmentation model, reduced from its class scores.

    Attributes:
        mask: ``HxW`` argmax class ids at the model's full resolution (uint8 up to 256
            classes).
        confidence: Max softmax probability on the sampled grid ``mask[::stride, ::stride]``.
        entropy: Softmax entropy (nats) on the same grid.
        stride: The sampling step of ``confidence`` and ``entropy``.
    """

    mask: np.ndarray
    confidence: np.ndarray
    entropy: np.ndarray
    stride: int

    @property
    def sampled_mask(self) -> np.ndarray:
        """The class ids on the grid of ``confidence``."""
        return self.mask[:: self.stride, :: self.stride]


def fast_argmax(scores: np.ndarray) -> np.ndarray:
    """``scores.argmax(axis=0)`` for ``[C, H, W]`` scores, about three times faster.

    numpy's argmax over the first axis walks memory with a stride of ``H*W``; the maximum over
    that axis is vectorised, so take it, then mark each class where it reaches it, from the
    last class to the first so that ties go to the lowest id, as with argmax.
    """
    best = scores.max(axis=0)
    ids = np.zeros(best.shape, dtype=np.uint8 if scores.shape[0] <= 256 else np.int64)
    hit = np.empty(best.shape, dtype=bool)
    for c in range(scores.shape[0] - 1, -1, -1):
        np.equal(scores[c], best, out=hit)
        np.copyto(ids, c, where=hit, casting="unsafe")
    return ids


def summarize_scores(
    scores: np.ndarray, from_logits: bool = True, max_grid: int = 64
) -> SoftmaxSummary:
    """Take the argmax of ``[C, H, W]`` class scores and their confidence and entropy.

    The softmax runs on a grid of at most ``max_grid`` pixels a side: it costs as much as the
    model's last layer at full resolution, and its averages barely change when subsampled.

    Args:
        scores: ``[C, H, W]`` logits (``from_logits``) or probabilities.
        from_logits: Whether ``scores`` are logits (else probabilities that sum to 1 over C).
        max_grid: Longest side of the grid on which confidence and entropy are computed.
    """
    if scores.ndim != 3:
        raise ValueError(f"expected [C, H, W] scores, got shape {scores.shape}")
    mask = fast_argmax(scores)
    stride = max(1, -(-max(scores.shape[1:]) // max_grid))
    grid = np.asarray(scores[:, ::stride, ::stride], dtype=np.float32)
    if from_logits:
        shifted = grid - grid.max(axis=0, keepdims=True)
        exp = np.exp(shifted)
        z = exp.sum(axis=0)
        confidence = 1 / z
        entropy = np.log(z) - (exp * shifted).sum(axis=0) / z
    else:
        confidence = grid.max(axis=0)
        entropy = -(grid * np.log(np.clip(grid, 1e-12, None))).sum(axis=0)
    return SoftmaxSummary(mask, confidence, np.maximum(entropy, 0), stride)


def prediction_features(
    scores: np.ndarray | SoftmaxSummary,
    class_names: Sequence[str],
    top_k: int = 5,
    from_logits: bool = True,
) -> dict[str, Any]:
    """Describe a prediction: which classes it found and how sure it was.

    Args:
        scores: ``[C, H, W]`` logits or probabilities, or their :func:`summarize_scores`.
        class_names: Class names by id.
        top_k: How many of the most common classes to list in ``top_classes``.
        from_logits: Whether ``scores`` are logits.

    Returns:
        ``class_shares`` (name -> share of pixels, classes present only), ``top_classes``
        (``[{"id", "name", "share"}]``, largest first), ``num_classes_present``,
        ``mean_confidence``, ``p10_confidence`` (10th percentile of per-pixel max probability)
        and ``mean_entropy`` (nats).
    """
    summary = (
        scores if isinstance(scores, SoftmaxSummary) else summarize_scores(scores, from_logits)
    )
    counts = np.bincount(summary.mask.ravel(), minlength=len(class_names))[: len(class_names)]
    shares = counts / max(1, summary.mask.size)
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return {
        "class_shares": {class_names[i]: float(shares[i]) for i in order},
        "top_classes": [
            {"id": i, "name": class_names[i], "share": float(shares[i])} for i in order[:top_k]
        ],
        "num_classes_present": len(order),
        "mean_confidence": float(summary.confidence.mean()),
        "p10_confidence": float(np.percentile(summary.confidence, 10)),
        "mean_entropy": float(summary.entropy.mean()),
    }
