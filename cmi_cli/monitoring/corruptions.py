"""Deterministic photo corruptions at five severities, for robustness tests (numpy and Pillow).

Each corruption mimics a way served photos drift from the training data: a brighter or
dimmer scene, a flat exposure, an out-of-focus lens, a noisy sensor, heavy compression.
Blur scales with the photo (a fraction of its longer side), so a severity means the same
on a thumbnail and on a 12 MP photo. Noise draws from a generator seeded by the corruption,
the severity and the image index, so a run is reproducible.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from cmi_cli.errors import UsageError

MAX_SEVERITY = 5
# Severity s uses the value at index s - 1.
_BRIGHTNESS = (25, 45, 65, 90, 115)  # added to every channel
_CONTRAST = (0.75, 0.6, 0.45, 0.32, 0.2)  # factor around the mean grey
_BLUR = (0.004, 0.008, 0.013, 0.02, 0.03)  # Gaussian radius / longer side
_NOISE = (8.0, 16.0, 26.0, 38.0, 52.0)  # standard deviation in 0..255 units
_JPEG = (50, 30, 18, 10, 5)  # JPEG quality


def _brightness(rgb: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rgb.astype(np.int16) + _BRIGHTNESS[severity - 1], 0, 255).astype(np.uint8)


def _contrast(rgb: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    img = rgb.astype(np.float32)
    mean = img.mean()
    out = (img - mean) * _CONTRAST[severity - 1] + mean
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _blur(rgb: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius = _BLUR[severity - 1] * max(rgb.shape[:2])
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


def _noise(rgb: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    noisy = rgb.astype(np.float32) + rng.normal(0, _NOISE[severity - 1], rgb.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def _jpeg(rgb: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=_JPEG[severity - 1])
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "brightness": _brightness,
    "contrast": _contrast,
    "blur": _blur,
    "noise": _noise,
    "jpeg": _jpeg,
}


def corrupt(rgb: np.ndarray, name: str, severity: int, index: int = 0) -> np.ndarray:
    """Return a corrupted copy of an ``HxWx3`` uint8 photo.

    Args:
        rgb: The photo.
        name: One of :data:`CORRUPTIONS`.
        severity: 1 (mild) to 5 (severe); 0 returns the photo unchanged.
        index: The photo's index, which seeds random corruptions (noise).

    Raises:
        UsageError: For an unknown corruption or a severity out of range.
    """
    if name not in CORRUPTIONS:
        raise UsageError(
            f"unknown corruption {name!r}", hint=f"Use some of: {', '.join(CORRUPTIONS)}"
        )
    if not 0 <= severity <= MAX_SEVERITY:
        raise UsageError(f"severity {severity} is out of range", hint="Use 1 to 5")
    if severity == 0:
        return rgb
    seed = zlib.crc32(f"{name}/{severity}/{index}".encode())
    return CORRUPTIONS[name](rgb, severity, np.random.default_rng(seed))


def corruption_fn(name: str, severity: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """Return ``f(rgb, index)`` applying one corruption at one severity (validated now)."""
    corrupt(np.zeros((1, 1, 3), np.uint8), name, severity)

    def apply(rgb: np.ndarray, index: int) -> np.ndarray:
        return corrupt(rgb, name, severity, index)

    return apply


def parse_corruptions(text: str) -> list[str]:
    """Parse ``brightness,blur`` (or ``all``) into corruption names.

    Raises:
        UsageError: For an empty list or an unknown name.
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if not names or unknown:
        raise UsageError(
            f"unknown corruption {', '.join(unknown) or repr(text)}",
            hint=f"--corruptions takes a comma list of {', '.join(CORRUPTIONS)} (or all)",
        )
    return list(dict.fromkeys(names))


def parse_severities(text: str) -> list[int]:
    """Parse ``1-5``, ``1,3,5`` or ``2`` into sorted severities in 1..5.

    Raises:
        UsageError: If the text is not such a list or a value is out of range.
    """
    values: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, sep, high = part.partition("-")
            values.update(range(int(low), int(high) + 1) if sep else [int(low)])
    except ValueError:
        values = set()
    if not values or not all(1 <= v <= MAX_SEVERITY for v in values):
        raise UsageError(
            f"invalid severities {text!r}", hint="Use a range or list in 1..5: 1-5, 1,3,5"
        )
    return sorted(values)
