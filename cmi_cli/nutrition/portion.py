"""The portion model: visible area on a plate of known size -> grams -> nutrients, with ranges.

Scale. A photo has no scale of its own, so one is assumed: the plate is a circle of
``plate_diameter_cm`` (given by the user, or 26 cm, a common dinner plate) whose diameter
spans ``PLATE_FILL`` of the photo's shorter side (FoodSeg103 photos are framed on the dish:
nominally 0.9, between 0.8 and 1.0). One photo pixel then covers
``(plate_diameter_cm / (fill * shorter_side))**2`` cm2.

Mass. A class's grams are its visible area times a mean food height (thickness) times a bulk
density, both from the nutrition table: ``grams = area_cm2 * thickness_cm * density_g_cm3``.

Ranges. ``low`` combines the low ends of every assumption (the plate fills the whole shorter
side, the thinnest layer, and only the pixels the model is sure of: pixel count times mean
confidence); ``high`` the high ends (the plate fills 0.8 of the side, the thickest layer, every
pixel). Nutrients of a class flagged ``broad`` widen by ``BROAD_COMPOSITION`` on top, because
one row cannot stand for everything the class covers. The ranges are bounds of the stated
assumptions, not statistical confidence intervals. Values are rounded to two significant
figures: the method cannot tell 137 g from 140 g.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmi_cli.classes import BACKGROUND_ID
from cmi_cli.errors import DataError, UsageError
from cmi_cli.nutrition.table import NutritionRow, NutritionTable, NutritionTableError

DEFAULT_PLATE_DIAMETER_CM = 26.0
PLATE_DIAMETER_LIMITS_CM = (5.0, 100.0)
# The plate's diameter as a share of the photo's shorter side: (low, nominal, high).
PLATE_FILL = (0.8, 0.9, 1.0)
# A broad class's nutrients per gram may be this far below / above its row's.
BROAD_COMPOSITION = (0.5, 1.5)
SIGNIFICANT_FIGURES = 2
NUTRIENTS = ("kcal", "protein_g", "carbohydrate_g", "fat_g")
METHOD = (
    "grams = visible area x thickness x bulk density; area scaled by a plate of the given "
    "diameter spanning 0.8-1.0 (nominal 0.9) of the photo's shorter side; nutrients per 100 g "
    "from the table; low/high combine the low/high ends of every assumption"
)


def significant(value: float, digits: int = SIGNIFICANT_FIGURES) -> float:
    """Round to ``digits`` significant figures (0 stays 0)."""
    if value == 0 or not math.isfinite(value):
        return 0.0 if value == 0 else value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


@dataclass(frozen=True)
class NutrientRange:
    """An estimate and its low-high range, rounded to two significant figures."""

    value: float
    low: float
    high: float

    @classmethod
    def of(cls, value: float, low: float, high: float) -> NutrientRange:
        """Round the three numbers."""
        return cls(significant(value), significant(low), significant(high))

    def to_dict(self) -> dict[str, float]:
        """``{"value": ..., "low": ..., "high": ...}``."""
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class ClassNutrition:
    """One class's estimated portion and nutrients."""

    class_id: int
    class_name: str
    pixels: int
    plate_share: float
    area_cm2: float
    confidence: float | None
    broad: bool
    source_food: str
    grams: NutrientRange
    kcal: NutrientRange
    protein_g: NutrientRange
    carbohydrate_g: NutrientRange
    fat_g: NutrientRange

    def to_record(self) -> dict[str, Any]:
        """A flat row for a table (CSV, Parquet): ``grams, grams_low, grams_high, kcal, ...``."""
        record: dict[str, Any] = {
            "class_id": self.class_id,
            "class_name": self.class_name,
            "plate_share": self.plate_share,
            "area_cm2": self.area_cm2,
        }
        for name in ("grams", *NUTRIENTS):
            r: NutrientRange = getattr(self, name)
            record.update({name: r.value, f"{name}_low": r.low, f"{name}_high": r.high})
        record["broad"] = self.broad
        return record

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of one class (see ``ClassNutrition`` in the API schema)."""
        out: dict[str, Any] = {
            "id": self.class_id,
            "name": self.class_name,
            "plate_share": self.plate_share,
            "area_cm2": self.area_cm2,
        }
        for name in ("grams", *NUTRIENTS):
            out[name] = getattr(self, name).to_dict()
        out.update(broad=self.broad, source_food=self.source_food)
        return out


@dataclass(frozen=True)
class NutritionEstimate:
    """Per-class estimates (largest mass first), totals and the assumptions behind them."""

    classes: list[ClassNutrition]
    total: dict[str, NutrientRange]
    assumptions: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """One flat row per class (see :meth:`ClassNutrition.to_record`)."""
        return [c.to_record() for c in self.classes]

    def total_record(self) -> dict[str, float]:
        """The totals as one flat row: ``grams, grams_low, grams_high, kcal, ...``."""
        out: dict[str, float] = {}
        for name, r in self.total.items():
            out.update({name: r.value, f"{name}_low": r.low, f"{name}_high": r.high})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (``nutrition`` of ``POST /v1/segment?nutrition=true``)."""
        return {
            "classes": [c.to_dict() for c in self.classes],
            "total": {name: r.to_dict() for name, r in self.total.items()},
            "assumptions": self.assumptions,
        }


def check_plate_diameter(value: float) -> float:
    """Return a usable plate diameter in cm.

    Raises:
        UsageError: If it is not a number between 5 and 100 cm.
    """
    low, high = PLATE_DIAMETER_LIMITS_CM
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise UsageError(
            f"plate diameter {value!r} cm is not between {low:g} and {high:g} cm",
            hint="Give the plate's diameter in centimetres, e.g. 26",
        )
    return float(value)


def estimate_nutrition(
    mask: np.ndarray,
    class_names: Sequence[str],
    plate_diameter_cm: float = DEFAULT_PLATE_DIAMETER_CM,
    table: NutritionTable | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    confidence: Mapping[int, float] | None = None,
    plate_diameter_source: str = "default",
) -> NutritionEstimate:
    """Estimate grams and nutrients per class from a class mask.

    Args:
        mask: ``H x W`` class ids (0 = background, not counted). It may be at the model's
            resolution: only each class's share of the mask is used.
        class_names: Names by class id (the model's classes).
        plate_diameter_cm: The plate's diameter (5-100 cm).
        table: The nutrition table; None for the packaged one.
        image_size: ``(width, height)`` of the photo the mask describes, when the mask was
            resized (e.g. a square model input); default: the mask's own shape.
        confidence: Mean confidence (0-1) per class id; missing classes count as 1.
        plate_diameter_source: Where the diameter came from (``default``, ``request``,
            ``config``, ``option``), stated in the assumptions.

    Returns:
        The estimate; ``records()`` and ``total_record()`` give flat table rows.

    Raises:
        UsageError: If the plate diameter is out of range.
        DataError: If the mask is not 2-D or holds ids outside ``class_names``.
        NutritionTableError: If a class present in the mask has no row in the table.
    """
    from cmi_cli.nutrition.table import packaged_table

    diameter = check_plate_diameter(plate_diameter_cm)
    table = table if table is not None else packaged_table()
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise DataError(f"a class mask must be a non-empty H x W array, got shape {mask.shape}")
    counts = np.bincount(mask.ravel().astype(np.int64, copy=False), minlength=len(class_names))
    if len(counts) > len(class_names):
        raise DataError(
            f"the mask holds class id {len(counts) - 1}; the model has {len(class_names)} classes"
        )
    width, height = image_size if image_size is not None else (mask.shape[1], mask.shape[0])
    photo_px_per_mask_px = (width * height) / mask.size
    shorter = min(width, height)
    fill_low, fill_nominal, fill_high = PLATE_FILL
    # cm2 per photo pixel when the plate spans `fill` of the shorter side
    cm2_per_px = {f: (diameter / (f * shorter)) ** 2 for f in PLATE_FILL}
    plate_area_cm2 = math.pi * diameter**2 / 4

    found: list[tuple[ClassNutrition, dict[str, tuple[float, float, float]]]] = []
    for cid in (int(i) for i in np.flatnonzero(counts)):
        if cid == BACKGROUND_ID:
            continue
        row = table.get(cid)
        if row is None:
            raise NutritionTableError(
                table.path, None, "class_id", f"no row for class id {cid} ({class_names[cid]!r})"
            )
        pixels = int(counts[cid]) * photo_px_per_mask_px
        conf = None if confidence is None else confidence.get(cid)
        sure = min(max(conf if conf is not None else 1.0, 0.0), 1.0)
        area = pixels * cm2_per_px[fill_nominal]
        raw = _class_amounts(row, area, pixels * sure * cm2_per_px[fill_high],
                             pixels * cm2_per_px[fill_low])  # fmt: skip
        item = ClassNutrition(
            class_id=cid,
            class_name=class_names[cid],
            pixels=int(counts[cid]),
            plate_share=round(area / plate_area_cm2, 3),
            area_cm2=significant(area),
            confidence=None if conf is None else round(float(conf), 3),
            broad=row.broad,
            source_food=row.source_food,
            **{name: NutrientRange.of(*v) for name, v in raw.items()},
        )
        found.append((item, raw))
    found.sort(key=lambda pair: -pair[1]["grams"][0])
    total = {
        name: NutrientRange.of(*(sum(raw[name][i] for _, raw in found) for i in range(3)))
        for name in ("grams", *NUTRIENTS)
    }
    assumptions = {
        "plate_diameter_cm": diameter,
        "plate_diameter_source": plate_diameter_source,
        "plate_fill": {"low": fill_low, "nominal": fill_nominal, "high": fill_high},
        "image_size": {"width": int(width), "height": int(height)},
        "broad_composition": {"low": BROAD_COMPOSITION[0], "high": BROAD_COMPOSITION[1]},
        "method": METHOD,
        "table": table.describe(),
        "significant_figures": SIGNIFICANT_FIGURES,
    }
    return NutritionEstimate([item for item, _ in found], total, assumptions)


def _class_amounts(
    row: NutritionRow, area: float, area_low: float, area_high: float
) -> dict[str, tuple[float, float, float]]:
    """Unrounded (value, low, high) of grams and each nutrient for one class."""
    mid = (row.thickness_low_cm + row.thickness_high_cm) / 2
    grams = (
        area * mid * row.density_g_cm3,
        area_low * row.thickness_low_cm * row.density_g_cm3,
        area_high * row.thickness_high_cm * row.density_g_cm3,
    )
    c_low, c_high = BROAD_COMPOSITION if row.broad else (1.0, 1.0)
    per_100g = {
        "kcal": row.energy_kcal,
        "protein_g": row.protein_g,
        "carbohydrate_g": row.carbohydrate_g,
        "fat_g": row.fat_g,
    }
    out = {"grams": grams}
    for name, per in per_100g.items():
        f = per / 100
        out[name] = (grams[0] * f, grams[1] * f * c_low, grams[2] * f * c_high)
    return out
