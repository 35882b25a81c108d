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
Positions = tuple[np.ndarray, np.ndarray, np.ndarray]


def source_positions(out_size: int, in_size: int) -> Positions:
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


def _interpolate_plane(plane: np.ndarray, rows: slice, y: Positions, x: Positions) -> np.ndarray:
    """Bilinearly sample one ``[h, w]`` plane at the output rows ``rows`` (all columns)."""
    y_low, y_high, y_weight = (v[rows] for v in y)
    x_low, x_high, x_weight = x
    top, bottom = plane[y_low], plane[y_high]
    vertical = top + (bottom - top) * y_weight[:, None]
    left = vertical[:, x_low]
    return left + (vertical[:, x_high] - left) * x_weight


def _exact(
    hwc: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    y: Positions,
    x: Positions,
) -> np.ndarray:
    """Return the interpolated ``[C, n]`` logits at output pixels ``(ys, xs)``.

    ``hwc`` is the logits as ``[h, w, C]``, so each gathered pixel is one contiguous row.
    """
    y_low, y_high, y_weight = (v[ys] for v in y)
    x_low, x_high, x_weight = (v[xs] for v in x)
    p00, p01 = hwc[y_low, x_low], hwc[y_low, x_high]
    p10, p11 = hwc[y_high, x_low], hwc[y_high, x_high]
    top = p00 + (p01 - p00) * x_weight[:, None]
    bottom = p10 + (p11 - p10) * x_weight[:, None]
    return (top + (bottom - top) * y_weight[:, None]).T


def _max_softmax(z: np.ndarray) -> np.ndarray:
    """Return the max softmax probability along axis 0 (``z`` is overwritten)."""
    z -= z.max(axis=0)
    np.exp(z, out=z)
    return (1.0 / z.sum(axis=0)).astype(np.float32)


def upsample_argmax(
    logits: np.ndarray,
    height: int,
    width: int,
    exact: bool = False,
    band_bytes: int = BAND_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Upsample ``[C, h, w]`` logits bilinearly to ``height x width`` and take the argmax.

    The mask equals ``F.interpolate(logits[None], (height, width), mode="bilinear",
    align_corners=False)[0].argmax(0)`` (up to float rounding in near-ties), without ever
    holding the full-size ``[C, height, width]`` volume.

    Where the four model pixels around an output pixel agree on the class, the interpolated
    logits (a convex blend of four vectors that share their argmax) have that argmax too, so
    only pixels near a boundary need all ``C`` scores: a photo costs about what its boundary
    band costs. Confidence (max softmax probability) is computed from the interpolated
    logits at those boundary pixels; inside a region it is the bilinear interpolation of the
    model-grid confidence (within a few hundredths), unless ``exact`` asks for the softmax
    at every pixel (a few times slower).

    Args:
        logits: Class scores ``[C, h, w]`` (any float dtype), C at most 256.
        height: Output rows (the photo's height).
        width: Output columns (the photo's width).
        exact: Compute every pixel from all ``C`` interpolated scores.
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
    if exact:
        for rows, band in _bands(arr, height, width, band_bytes):
            mask[rows] = band.argmax(axis=0)
            confidence[rows] = _max_softmax(band)
        return mask, confidence
    labels = arr.argmax(axis=0).astype(np.uint8)
    grid_confidence = _max_softmax(arr.astype(np.float32))
    for rows, ys, xs, z in _boundaries(arr, labels, height, width, band_bytes, mask):
        confidence[rows] = _interpolate_plane(
            grid_confidence, rows, *_positions(arr, height, width)
        )
        if z is not None:
            mask[rows][ys, xs] = z.argmax(axis=0)
            confidence[rows][ys, xs] = _max_softmax(z)
    return mask, confidence


def _positions(arr: np.ndarray, height: int, width: int) -> tuple[Positions, Positions]:
    return source_positions(height, arr.shape[1]), source_positions(width, arr.shape[2])


def _boundaries(  # type: ignore[no-untyped-def]
    arr: np.ndarray, labels: np.ndarray, height: int, width: int, band_bytes: int, mask: np.ndarray
):
    """Fill ``mask`` band by band from the corner labels; yield each band's boundary pixels.

    Yields ``(rows, ys, xs, logits [C, n] or None)`` with ``ys, xs`` the band-relative
    positions of pixels whose four corners disagree and their interpolated logits.
    """
    y, x = _positions(arr, height, width)
    hwc = np.ascontiguousarray(arr.transpose(1, 2, 0), dtype=np.float32)
    y_low, y_high, _ = y
    x_low, x_high, _ = x
    # Up to every pixel of a band may be a boundary pixel, with six [n, C] work arrays.
    rows_per_band = max(1, band_bytes // (6 * 4 * arr.shape[0] * width))
    for start in range(0, height, rows_per_band):
        rows = slice(start, min(height, start + rows_per_band))
        top, bottom = labels[y_low[rows]], labels[y_high[rows]]
        a, b = top[:, x_low], top[:, x_high]
        c, d = bottom[:, x_low], bottom[:, x_high]
        mask[rows] = a
        ys, xs = np.nonzero((a != b) | (a != c) | (a != d))
        z = _exact(hwc, ys + start, xs, y, x) if len(ys) else None
        yield rows, ys, xs, z


def upsample_labels(
    logits: np.ndarray, height: int, width: int, band_bytes: int = BAND_BYTES
) -> np.ndarray:
    """Return only the mask of :func:`upsample_argmax` (cheaper: no softmax)."""
    arr = _check(logits, height, width)
    mask = np.empty((height, width), dtype=np.uint8)
    labels = arr.argmax(axis=0).astype(np.uint8)
    for rows, ys, xs, z in _boundaries(arr, labels, height, width, band_bytes, mask):
        if z is not None:
            mask[rows][ys, xs] = z.argmax(axis=0)
    return mask
