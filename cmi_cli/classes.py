"""The FoodSeg103 class list (104 names, id 0 = background) and a stable colour per class."""

from __future__ import annotations

import colorsys
from functools import lru_cache
from importlib import resources
from pathlib import Path

from cmi_cli.errors import DataError

NUM_CLASSES = 104
BACKGROUND_ID = 0
IGNORE_INDEX = 255


def parse_category_file(text: str, source: str = "category_id.txt") -> list[str]:
    """Parse FoodSeg103's ``category_id.txt`` (``ID<tab>NAME`` per line).

    Args:
        text: The file's contents.
        source: Name used in error messages.

    Returns:
        Class names indexed by id.

    Raises:
        DataError: If ids are not 0..N-1 in order or a line cannot be parsed.
    """
    names: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{source}:{lineno}: expected 'ID NAME', got {line.strip()!r}")
        if int(parts[0]) != len(names):
            raise DataError(f"{source}:{lineno}: expected id {len(names)}, got {parts[0]}")
        names.append(parts[1].strip())
    if not names:
        raise DataError(f"{source} lists no classes")
    return names


@lru_cache(maxsize=1)
def foodseg103_class_names() -> tuple[str, ...]:
    """Return the 104 FoodSeg103 class names shipped with the package."""
    text = resources.files("cmi_cli").joinpath("resources/category_id.txt").read_text("utf-8")
    return tuple(parse_category_file(text))


def load_class_names(root: Path | None = None) -> list[str]:
    """Return the class names of a dataset folder, or FoodSeg103's when it has none.

    Args:
        root: A dataset root that may hold ``category_id.txt``.
    """
    if root is not None and (root / "category_id.txt").is_file():
        path = root / "category_id.txt"
        return parse_category_file(path.read_text("utf-8"), str(path))
    return list(foodseg103_class_names())


def class_colors(num_classes: int = NUM_CLASSES) -> list[tuple[int, int, int]]:
    """Return one RGB colour per class: background black, then :data:`cmi_cli.palette.PALETTE`.

    The 104 colours are as far apart as sRGB allows (smallest CIEDE2000 difference 11.4); the
    web page, plots, masks and overlays all take them from here. A dataset with more classes
    gets stepped hues (:func:`hue_colors`) past the table.
    """
    from cmi_cli.palette import PALETTE, hex_to_rgb

    colors = [hex_to_rgb(c) for c in PALETTE[:num_classes]]
    return colors + hue_colors(num_classes)[len(colors) :]


def hue_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """Return colours by golden-ratio hue steps; background black.

    Deterministic and unbounded, but neighbours in colour space are close: the class palette
    uses it only past its table; the synthetic sample's food tints come from it.
    """
    colors = [(0, 0, 0)]
    for i in range(1, num_classes):
        hue = (i * 0.618033988749895) % 1.0
        sat = 0.55 + 0.35 * ((i * 7) % 3) / 2
        val = 0.75 + 0.25 * ((i * 5) % 2)
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors
