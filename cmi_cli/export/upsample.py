"""Full-resolution masks from low-resolution logits, in numpy (no torch, bounded memory).

A model sees the photo squashed to ``S x S`` and returns ``[C, S, S]`` logits. Enlarging the
argmax mask with nearest neighbours gives blocks of ``H/S`` pixels along every boundary;
interpolating the *logits* bilinearly and taking the argmax per photo pixel gives boundaries
as smooth as the logits are, which is what segmentation papers (FoodSeg103's included) score.

The sampling is the half-pixel convention of ``torch.nn.functional.interpolate(...,
mode="bilinear", align_corners=False)`` and of Pillow's bilinear resize that squashed the
photo: output pixel ``x`` reads source position ``(x + 0.5) * w / W - 0.5``, clamped to the
edge. Work goes in bands of rows so that a 6000 x 6000 photo with 104 classes never holds more
than about :data:`BAND_BYTES` of float32 logits (the full volume would be 15 GB).
"""

from __future__ import annotations

import numpy as np

BAND_BYTES = 32 * 2**20


def source_positions(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return, per output index, the two source indices and the weight of the second.

    The half-pixel rule of ``align_corners=False``: ``src = (dst + 0.5) * in / out - 0.5``,
    clamped at 0 (and the upper neighbour at ``in - 1``).
    """
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (src - low).astype(np.float32)


def _check(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    arr = np.asarray(logits)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"expected logits [C, h, w], got shape {list(arr.shape)}")
    if arr.shape[0] > 256:
        raise ValueError(f"{arr.shape[0]} classes do not fit a uint8 mask")
    if height < 1 or width < 1:
        raise ValueError(f"the output size must be positive, got {width}x{height}")
    return arr


def _bands(logits: np.ndarray, height: int, width: int, band_bytes: int):  # type: ignore[no-untyped-def]
    """Yield ``(row slice, logits [C, rows, width] float32)`` covering the output."""
    classes, h, w = logits.shape
    y_low, y_high, y_weight = source_positions(height, h)
    x_low, x_high, x_weight = source_positions(width, w)
    # Three band-sized arrays are alive at once (two gathers and their blend).
    rows = max(1, band_bytes // (3 * 4 * classes * width))
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        wy = y_weight[start:stop][None, :, None]
        top = logits[:, y_low[start:stop], :].astype(np.float32, copy=False)
        bottom = logits[:, y_high[start:stop], :].astype(np.float32, copy=False)
        vertical = top + (bottom - top) * wy  # [C, rows, w]
        left = vertical[:, :, x_low]
        band = vertical[:, :, x_high]
        band -= left
        band *= x_weight
        band += left  # [C, rows, width]
        yield slice(start, stop), band


def upsample_argmax(
    logits: np.ndarray, height: int, width: int, band_bytes: int = BAND_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Upsample ``[C, h, w]`` logits bilinearly to ``height x width`` and take the argmax.

    Equal (up to float rounding) to ``F.interpolate(logits[None], (height, width),
    mode="bilinear", align_corners=False)[0]`` followed by argmax and max softmax, without
    ever holding the full-size ``[C, height, width]`` volume.

    Args:
        logits: Class scores ``[C, h, w]`` (any float dtype), C at most 256.
        height: Output rows (the photo's height).
        width: Output columns (the photo's width).
        band_bytes: Rough memory bound for the float32 work arrays.

    Returns:
        ``(mask uint8 [height, width], confidence float32 [height, width])``: the class id
        and the max softmax probability of each output pixel.

    Raises:
        ValueError: If the logits are not ``[C, h, w]`` or the size is not positive.
    """
    arr = _check(logits, height, width)
    mask = np.empty((height, width), dtype=np.uint8)
    confidence = np.empty((height, width), dtype=np.float32)
    for rows, band in _bands(arr, height, width, band_bytes):
        mask[rows] = band.argmax(axis=0)
        top = band.max(axis=0)
        band -= top
        np.exp(band, out=band)
        confidence[rows] = 1.0 / band.sum(axis=0)
    return mask, confidence


def upsample_labels(
    logits: np.ndarray, height: int, width: int, band_bytes: int = BAND_BYTES
) -> np.ndarray:
    """Return only the mask of :func:`upsample_argmax` (cheaper: no softmax)."""
    arr = _check(logits, height, width)
    mask = np.empty((height, width), dtype=np.uint8)
    for rows, band in _bands(arr, height, width, band_bytes):
        mask[rows] = band.argmax(axis=0)
    return mask
