"""Image/mask transforms for training and validation, in numpy and Pillow.

Images are resized bilinearly and masks with nearest neighbour so class ids are never blended;
pixels added by padding get the ignore id 255. Randomness comes only from the
``numpy.random.Generator`` passed in, so a transform is reproducible given its generator.
Both transforms return ``(image float32 [3, S, S], mask int64 [S, S])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

from cmi_cli.classes import IGNORE_INDEX

# ITU-R 601 luma weights, as Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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


def crop_or_pad(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a random ``size x size`` window, padding first where the pair is smaller.

    The image is padded with zeros and the mask with the ignore id, at a random offset.
    """
    h, w = mask.shape
    out_img = np.zeros((size, size, 3), dtype=image.dtype)
    out_mask = np.full((size, size), IGNORE_INDEX, dtype=mask.dtype)
    # Per axis: a window start inside a larger source, or a placement inside a larger target.
    y = int(rng.integers(0, abs(h - size) + 1))
    x = int(rng.integers(0, abs(w - size) + 1))
    src_y, dst_y = (y, 0) if h >= size else (0, y)
    src_x, dst_x = (x, 0) if w >= size else (0, x)
    ch, cw = min(h, size), min(w, size)
    out_img[dst_y : dst_y + ch, dst_x : dst_x + cw] = image[src_y : src_y + ch, src_x : src_x + cw]
    out_mask[dst_y : dst_y + ch, dst_x : dst_x + cw] = mask[src_y : src_y + ch, src_x : src_x + cw]
    return out_img, out_mask


def jitter_colors(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Change brightness, contrast and saturation by random factors in ``1 ± strength``.

    Returns a float32 ``HxWx3`` image in 0..255.
    """
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    img = image.astype(np.float32) * np.float32(b)
    gray = img @ _LUMA
    img = (img - gray.mean()) * np.float32(c) + gray.mean()
    gray = (img @ _LUMA)[..., None]
    img = (img - gray) * np.float32(s) + gray
    return np.clip(img, 0, 255, out=img)


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
    random: ClassVar[bool] = False

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image float32 [3, S, S], mask int64 [S, S])``; ``rng`` is unused."""
        s = self.image_size
        img = resize_image(image, s, s)
        return normalize(img, self.mean, self.std), resize_mask(mask, s, s).astype(np.int64)


@dataclass(frozen=True)
class TrainTransform:
    """Random zoom, crop/pad, horizontal flip and colour jitter, then normalisation.

    The pair is first squashed to a square of ``image_size * scale`` (as validation squashes
    it to ``image_size``), then a random ``image_size`` window is cut or padded.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hflip: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    color_jitter: float = 0.2
    random: ClassVar[bool] = True

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image float32 [3, S, S], mask int64 [S, S])`` for one random draw."""
        side = max(1, round(self.image_size * rng.uniform(*self.scale)))
        img, m = resize_image(image, side, side), resize_mask(mask, side, side)
        if self.hflip and rng.random() < 0.5:
            img, m = img[:, ::-1], m[:, ::-1]
        img, m = crop_or_pad(img, m, self.image_size, rng)
        out = jitter_colors(img, self.color_jitter, rng) if self.color_jitter > 0 else img
        return normalize(out, self.mean, self.std), m.astype(np.int64)
