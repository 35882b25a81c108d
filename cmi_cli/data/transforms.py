"""Resizing and normalisation in numpy and Pillow, with no torch.

Evaluation, ONNX validation, calibration and serving turn a photo into model input with these.
Images are resized bilinearly and masks with nearest neighbour so class ids are never blended.
Training augments per batch in torch instead (see :mod:`cmi_cli.data.batch_transforms`); its
evaluation path matches :class:`EvalTransform` up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an ``HxWx3`` uint8 image bilinearly."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an ``HxW`` uint8 mask with nearest neighbour (class ids stay class ids)."""
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Squash a pair to ``size x size``: the image bilinearly, the mask with nearest neighbour.

    What ``cmi data prepare`` packs, what the training loaders yield and what evaluation sees.
    """
    return resize_image(image, size, size), resize_mask(mask, size, size)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Scale 0..255 RGB to 0..1, subtract ``mean``, divide by ``std``; return float32 CHW."""
    m = np.asarray(mean, dtype=np.float32) * 255
    inv = 1 / (np.asarray(std, dtype=np.float32) * 255)
    out = (image.astype(np.float32) - m) * inv
    return np.ascontiguousarray(out.transpose(2, 0, 1))


@dataclass(frozen=True)
class EvalTransform:
    """Resize a pair to ``image_size x image_size`` and normalise the image."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image float32 [3, S, S], mask int64 [S, S])``."""
        img, out = resize_pair(image, mask, self.image_size)
        return normalize(img, self.mean, self.std), out.astype(np.int64)
