"""``cmi predict --nutrition``: each photo's nutrition estimate, in the journal and the tables.

The estimate is :func:`cmi_cli.nutrition.estimate_nutrition` on the photo-size mask, with each
class's mean confidence, exactly as ``POST /v1/segment?nutrition=true`` computes it. It is
taken when the photo is predicted (the mask exists only then) and kept in the photo's journal
record, from which the class table's nutrition columns and ``totals`` (one row per photo) are
rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmi_cli.nutrition import (
    DEFAULT_PLATE_DIAMETER_CM,
    NutritionTable,
    NutritionTableError,
    estimate_nutrition,
    load_nutrition_table,
)
from cmi_cli.nutrition.portion import NUTRIENTS, check_plate_diameter

if TYPE_CHECKING:
    from cmi_cli.predict.segment import Segmented

# Names the portion model of cmi_cli.nutrition.portion (its METHOD text is in predict.json).
METHOD_TAG = "plate-area-thickness-density"
_AMOUNTS = [f"{n}{s}" for n in ("grams", *NUTRIENTS) for s in ("", "_low", "_high")]
ASSUMPTION_COLUMNS = (
    "plate_diameter_cm",
    "plate_diameter_source",
    "nutrition_method",
    "nutrition_table_sha256",
)
NUTRITION_COLUMNS = ("area_cm2", *_AMOUNTS, "broad", *ASSUMPTION_COLUMNS)
"""Columns the class table gains with ``--nutrition`` (empty for background)."""
TOTALS_COLUMNS = ("image", "width", "height", *_AMOUNTS, *ASSUMPTION_COLUMNS)
"""Columns of ``totals.csv`` / ``totals.parquet``: one row per photo."""


@dataclass(frozen=True)
class NutritionOptions:
    """The table and plate size a run estimates with."""

    table: NutritionTable
    plate_diameter_cm: float
    plate_diameter_source: str

    @classmethod
    def load(cls, table_path: Path | None, plate_diameter_cm: float | None) -> NutritionOptions:
        """Read and validate the table (None: the packaged one) and the plate diameter.

        Raises:
            NutritionTableError: If the table is missing or invalid.
            UsageError: If the diameter is outside 5-100 cm.
        """
        if plate_diameter_cm is None:
            diameter, source = DEFAULT_PLATE_DIAMETER_CM, "default"
        else:
            diameter, source = check_plate_diameter(plate_diameter_cm), "option"
        try:
            table = load_nutrition_table(table_path)
        except NutritionTableError as exc:
            exc.hint = "Fix the table (format: docs/guides/nutrition.md) or leave out "
            exc.hint += "--nutrition-table to use the packaged one"
            raise
        return cls(table, diameter, source)

    def key(self) -> dict[str, Any]:
        """What a journal record's estimate must match to be reused by ``--resume``."""
        return {"plate_diameter_cm": self.plate_diameter_cm, "table_sha256": self.table.sha256}

    def estimate(self, seg: Segmented, class_names: Sequence[str]) -> dict[str, Any]:
        """The journal form of one photo's estimate (see :func:`nutrition_columns`)."""
        assert seg.mask is not None
        estimate = estimate_nutrition(
            seg.mask,
            class_names,
            self.plate_diameter_cm,
            self.table,
            image_size=(seg.width, seg.height),
            confidence={c.id: c.confidence_sum / c.pixels for c in seg.classes if c.pixels},
            plate_diameter_source=self.plate_diameter_source,
        )
        return {
            **self.key(),
            "plate_diameter_source": self.plate_diameter_source,
            "classes": {str(r["class_id"]): r for r in estimate.records()},
            "total": estimate.total_record(),
        }

    def describe(self) -> dict[str, Any]:
        """The assumptions of the run, for ``predict.json``."""
        from cmi_cli.nutrition.portion import BROAD_COMPOSITION, METHOD, PLATE_FILL

        return {
            "plate_diameter_cm": self.plate_diameter_cm,
            "plate_diameter_source": self.plate_diameter_source,
            "method": METHOD_TAG,
            "method_text": METHOD,
            "plate_fill": dict(zip(("low", "nominal", "high"), PLATE_FILL, strict=True)),
            "broad_composition": dict(zip(("low", "high"), BROAD_COMPOSITION, strict=True)),
            "table": self.table.describe(),
        }


def _assumptions(nutrition: dict[str, Any]) -> dict[str, Any]:
    return {
        "plate_diameter_cm": nutrition["plate_diameter_cm"],
        "plate_diameter_source": nutrition.get("plate_diameter_source"),
        "nutrition_method": METHOD_TAG,
        "nutrition_table_sha256": nutrition["table_sha256"],
    }


def nutrition_columns(nutrition: dict[str, Any] | None, class_id: int) -> dict[str, Any]:
    """The nutrition columns of one class row; all empty for background (or no estimate)."""
    record = (nutrition or {}).get("classes", {}).get(str(class_id))
    if nutrition is None or record is None:
        return dict.fromkeys(NUTRITION_COLUMNS)
    out = {k: record.get(k) for k in ("area_cm2", *_AMOUNTS, "broad")}
    return {**out, **_assumptions(nutrition)}


def totals_row(record: dict[str, Any]) -> dict[str, Any]:
    """One photo's row of the totals table (empty amounts when it has no estimate)."""
    nutrition = record.get("nutrition")
    row: dict[str, Any] = {
        "image": record["image"],
        "width": record["width"],
        "height": record["height"],
    }
    if nutrition is None:
        return {**row, **dict.fromkeys(TOTALS_COLUMNS[3:])}
    total = nutrition["total"]
    return {**row, **{k: total.get(k) for k in _AMOUNTS}, **_assumptions(nutrition)}
