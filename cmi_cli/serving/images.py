"""Turning uploaded bytes into RGB arrays safely, and images back into bytes.

Pillow opens lazily: the format and the declared size are known before any pixel is decoded,
so a decompression bomb is refused from its header. Every failure is a :class:`ClientError`
with the HTTP status it deserves; nothing a client sends should surface as a 500.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from cmi_cli.serving.errors import ClientError

_ORIENTATION = 0x0112
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def set_pixel_limit(max_pixels: int) -> None:
    """Make Pillow's own bomb check (a process-wide setting) agree with ours.

    Pillow warns between one and two times its limit; :func:`decode_image` refuses those
    images itself, so the warning is silenced once here (``catch_warnings`` per call would
    not be thread-safe).
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode a JPEG, PNG or WebP upload into an ``HxWx3`` uint8 RGB array at full size.

    See :func:`decode_photo` for the checks and errors.
    """
    return decode_photo(data, max_pixels)[0]


def fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with the aspect of ``width x height`` and at most ``max_pixels``."""
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def decode_photo(
    data: bytes, max_pixels: int, min_side: int | None = None, max_out_pixels: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a JPEG, PNG or WebP upload into an RGB array; also return its full size.

    EXIF orientation is applied, so a phone photo is segmented the way it is viewed. Memory
    is bounded by the size limits: a photo is refused from its header when it has more than
    ``max_pixels`` pixels, a JPEG is decoded directly at reduced scale (in the DCT domain)
    when a smaller array will do, and PNG or WebP, which can only be decoded whole, are
    scaled down right after decoding, before any copy is made (grey or palette images are
    converted to RGB after that, at the small size).

    Args:
        data: The uploaded bytes.
        max_pixels: The largest ``width * height`` accepted.
        min_side: When given, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both
            sides stay at least this long; the model sees a 256 px square, so a 12 MP photo
            need not be decoded whole.
        max_out_pixels: When given, the array returned has at most this many pixels (the
            photo scaled down, aspect kept; see :func:`fit_size`).

    Returns:
        ``(HxWx3 uint8 array, (width, height) of the full photo after EXIF rotation)``.

    Raises:
        ClientError: 400 for empty, truncated or corrupt images; 413 for images with more
            than ``max_pixels`` pixels; 415 for data that is not an image or an image in
            another format.
    """
    if not data:
        raise ClientError(400, "empty_file", "the uploaded file is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, max_pixels) from None
    except UnidentifiedImageError:
        raise ClientError(
            415, "not_an_image", "the upload is not an image Pillow can identify"
        ) from None
    except Exception as exc:  # header parsers raise SyntaxError, ValueError, OSError...
        raise ClientError(400, "invalid_image", f"unreadable image header ({exc})") from None
    with img:
        if img.format not in MEDIA_TYPES:
            raise ClientError(
                415,
                "unsupported_format",
                f"images in {img.format} are not accepted; send JPEG, PNG or WebP",
            )
        width, height = img.size
        if width * height > max_pixels:
            raise _too_many_pixels((width, height), max_pixels)
        if width < 1 or height < 1:
            raise ClientError(400, "invalid_image", "the image has no pixels")
        target = fit_size(width, height, max_out_pixels or width * height)
        try:
            orientation = img.getexif().get(_ORIENTATION, 1)
            if img.format == "JPEG":  # scale >= the request: 1, 1/2, 1/4 or 1/8
                img.draft("RGB", (min_side, min_side) if min_side else target)
            img.load()
            small: Image.Image = img
            if small.width * small.height > target[0] * target[1]:
                small = small.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
            if orientation in _TRANSPOSE:
                small = small.transpose(_TRANSPOSE[orientation])
            rgb = small.convert("RGB")
        except Image.DecompressionBombError:
            raise _too_many_pixels((width, height), max_pixels) from None
        except Exception as exc:  # truncated data: OSError; corrupt streams: others
            raise ClientError(
                400, "invalid_image", f"the image is truncated or corrupt ({exc})"
            ) from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return np.asarray(rgb), (width, height)


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> ClientError:
    shown = f"{size[0]}x{size[1]} pixels" if size else "too many pixels"
    return ClientError(
        413, "image_too_large", f"the image has {shown}; the limit is {max_pixels} pixels"
    )


def encode_png(array: np.ndarray) -> bytes:
    """Encode a uint8 ``HxW`` or ``HxWx3`` array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    """Encode an ``HxWx3`` uint8 RGB array as JPEG."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
