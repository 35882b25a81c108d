"""The nutrition table: per-100 g composition and a portion assumption for each class.

The packaged table (``cmi_cli/resources/nutrition.csv``) has one row per FoodSeg103 ingredient
class. A user's table in the same CSV format replaces it; every problem in it is a
:class:`NutritionTableError` that names the file, the line, the column and what is wrong.
Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from cmi_cli.errors import DataError

PACKAGED = "packaged"
NUMERIC_COLUMNS = (
    "energy_kcal",
    "protein_g",
    "carbohydrate_g",
    "fibre_g",
    "fat_g",
    "alcohol_g",
    "thickness_low_cm",
    "thickness_high_cm",
    "density_g_cm3",
)
COLUMNS = ("class_id", "class_name", *NUMERIC_COLUMNS, "broad", "source", "source_food")
OPTIONAL_COLUMNS = ("source_id", "note")
# Atwater general factors (kcal per g); fibre at 2 kcal/g as in FAO/INFOODS and EU labelling,
# because SR Legacy's carbohydrate "by difference" includes the fibre.
KCAL_PER_G = {"protein": 4.0, "carbohydrate": 4.0, "fibre": 2.0, "fat": 9.0, "alcohol": 7.0}
# SR Legacy computes energy with food-specific factors, and values here are rounded: the general
# factors may miss by a few kcal on lean foods and by a few percent on nuts and dried fruit.
ENERGY_TOLERANCE_KCAL = 15.0
ENERGY_TOLERANCE_SHARE = 0.15
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no", ""}


class NutritionTableError(DataError):
    """A nutrition table that cannot be used, naming where and what.

    Args:
        path: The table (``packaged`` for the one shipped with cmi-cli).
        line: The line of the file (1-based, comments counted), or None for the whole file.
        column: The column concerned, or None.
        problem: What is wrong.
    """

    def __init__(self, path: str, line: int | None, column: str | None, problem: str) -> None:
        where = path if line is None else f"{path}:{line}"
        if column:
            where += f": column {column}"
        super().__init__(
            f"bad nutrition table {where}: {problem}",
            hint="Fix the table (format: docs/guides/nutrition.md) or leave CMI_NUTRITION_TABLE "
            "unset to use the packaged one",
        )
        self.path, self.line, self.column, self.problem = path, line, column, problem


@dataclass(frozen=True)
class NutritionRow:
    """One class's composition per 100 g and how visible area turns into mass."""

    class_id: int
    class_name: str
    energy_kcal: float
    protein_g: float
    carbohydrate_g: float
    fibre_g: float
    fat_g: float
    alcohol_g: float
    thickness_low_cm: float
    thickness_high_cm: float
    density_g_cm3: float
    broad: bool
    source: str
    source_food: str
    source_id: str = ""
    note: str = ""

    @property
    def atwater_kcal(self) -> float:
        """Energy per 100 g from the macronutrients with the general factors."""
        k = KCAL_PER_G
        return (
            k["protein"] * self.protein_g
            + k["carbohydrate"] * (self.carbohydrate_g - self.fibre_g)
            + k["fibre"] * self.fibre_g
            + k["fat"] * self.fat_g
            + k["alcohol"] * self.alcohol_g
        )


@dataclass(frozen=True)
class NutritionTable:
    """A validated table: rows by class id, and where it came from."""

    rows: dict[int, NutritionRow]
    path: str
    sha256: str

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, class_id: int) -> NutritionRow | None:
        """The row of a class id, or None."""
        return self.rows.get(class_id)

    def check_classes(self, class_names: Sequence[str]) -> None:
        """Require a row, with the same name, for every class but background (id 0).

        Raises:
            NutritionTableError: If a class has no row or a row names another class.
        """
        for cid, name in enumerate(class_names):
            if cid == 0:
                continue
            row = self.rows.get(cid)
            if row is None:
                raise NutritionTableError(
                    self.path, None, "class_id", f"no row for class id {cid} ({name!r})"
                )
            if _norm(row.class_name) != _norm(name):
                raise NutritionTableError(
                    self.path,
                    None,
                    "class_name",
                    f"class id {cid} is {row.class_name!r} in the table but {name!r} "
                    "in the model's classes",
                )

    def describe(self) -> dict[str, object]:
        """Where the table came from: path (or ``packaged``), sha256 and row count."""
        return {"path": self.path, "sha256": self.sha256, "rows": len(self.rows)}


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def load_nutrition_table(
    path: Path | str | None = None, class_names: Sequence[str] | None = None
) -> NutritionTable:
    """Read and validate a nutrition table.

    Args:
        path: A CSV in the packaged table's format; None for the packaged table.
        class_names: When given, every class but background (id 0) must have a row with
            its name; the packaged table is always checked against FoodSeg103's classes.

    Returns:
        The validated table.

    Raises:
        NutritionTableError: If the file is missing or unreadable, a column is missing, a
            value is not a number, negative or out of range, a class id is repeated or
            missing, or a row's energy disagrees with its macronutrients.
    """
    if path is None:
        table = packaged_table()
    else:
        source = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise NutritionTableError(
                source, None, None, f"cannot read it ({exc.strerror or exc})"
            ) from None
        table = parse_nutrition_table(data, source)
    if class_names is not None:
        table.check_classes(class_names)
    return table


@lru_cache(maxsize=1)
def packaged_table() -> NutritionTable:
    """The table shipped with cmi-cli, checked against FoodSeg103's 104 classes."""
    from cmi_cli.classes import foodseg103_class_names

    data = resources.files("cmi_cli").joinpath("resources/nutrition.csv").read_bytes()
    table = parse_nutrition_table(data, PACKAGED)
    table.check_classes(foodseg103_class_names())
    return table


def parse_nutrition_table(data: bytes, source: str) -> NutritionTable:
    """Parse and validate a table's bytes (see :func:`load_nutrition_table`)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NutritionTableError(source, None, None, f"not UTF-8 text ({exc.reason})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)]
    body = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not body:
        raise NutritionTableError(source, None, None, "no header and no rows")
    numbers = [n for n, _ in body]
    reader = csv.reader(io.StringIO("\n".join(line for _, line in body)))
    header = [h.strip() for h in next(reader)]
    for col in COLUMNS:
        if col not in header:
            raise NutritionTableError(source, numbers[0], col, "missing from the header")
    rows: dict[int, NutritionRow] = {}
    for index, cells in enumerate(reader, 1):
        lineno = numbers[index] if index < len(numbers) else numbers[-1]
        if len(cells) != len(header):
            raise NutritionTableError(
                source, lineno, None, f"{len(cells)} fields, the header has {len(header)}"
            )
        record = {h: c.strip() for h, c in zip(header, cells, strict=True)}
        row = _parse_row(record, source, lineno)
        if row.class_id in rows:
            raise NutritionTableError(
                source, lineno, "class_id", f"class id {row.class_id} appears twice"
            )
        rows[row.class_id] = row
    if not rows:
        raise NutritionTableError(source, None, None, "no rows")
    digest = hashlib.sha256(data).hexdigest()
    return NutritionTable(dict(sorted(rows.items())), source, digest)


def _parse_row(record: dict[str, str], source: str, line: int) -> NutritionRow:
    def fail(column: str | None, problem: str) -> NutritionTableError:
        return NutritionTableError(source, line, column, problem)

    raw_id = record["class_id"]
    if not raw_id.isdigit() or int(raw_id) < 1:
        raise fail("class_id", f"{raw_id!r} is not a class id (an integer >= 1; 0 is background)")
    if not record["class_name"]:
        raise fail("class_name", "empty")
    values: dict[str, float] = {}
    for col in NUMERIC_COLUMNS:
        raw = record[col]
        try:
            value = float(raw)
        except ValueError:
            raise fail(col, f"{raw!r} is not a number") from None
        if not math.isfinite(value):
            raise fail(col, f"{raw!r} is not a finite number")
        if value < 0:
            raise fail(col, f"{raw} is negative")
        values[col] = value
    broad = record["broad"].lower()
    if broad not in _TRUE | _FALSE:
        raise fail("broad", f"{record['broad']!r} is not 0/1 (or true/false)")
    for col in ("source", "source_food"):
        if not record[col]:
            raise fail(col, "empty: name the food-composition database and the food")
    row = NutritionRow(
        class_id=int(raw_id),
        class_name=record["class_name"],
        broad=broad in _TRUE,
        source=record["source"],
        source_food=record["source_food"],
        source_id=record.get("source_id", ""),
        note=record.get("note", ""),
        **values,
    )
    _check_row(row, fail)
    return row


def _check_row(row: NutritionRow, fail: Callable[[str | None, str], NutritionTableError]) -> None:
    if row.thickness_high_cm <= 0 or row.density_g_cm3 <= 0:
        col = "density_g_cm3" if row.density_g_cm3 <= 0 else "thickness_high_cm"
        raise fail(col, "must be above 0 (a class with no mass cannot be estimated)")
    if row.thickness_low_cm > row.thickness_high_cm:
        raise fail(
            "thickness_low_cm",
            f"{row.thickness_low_cm:g} is above thickness_high_cm {row.thickness_high_cm:g}",
        )
    if row.fibre_g > row.carbohydrate_g:
        raise fail("fibre_g", f"{row.fibre_g:g} g is more than the carbohydrate it is part of")
    mass = row.protein_g + row.carbohydrate_g + row.fat_g + row.alcohol_g
    if mass > 100.5:  # rounding of four values may add up to a little over 100 g
        raise fail(None, f"protein + carbohydrate + fat + alcohol = {mass:g} g, over 100 g")
    expected = row.atwater_kcal
    tolerance = max(ENERGY_TOLERANCE_KCAL, ENERGY_TOLERANCE_SHARE * row.energy_kcal)
    if abs(row.energy_kcal - expected) > tolerance:
        raise fail(
            "energy_kcal",
            f"{row.energy_kcal:g} kcal disagrees with its macronutrients ({expected:.0f} kcal "
            f"from 4/4/2/9/7 kcal per g protein/carbohydrate/fibre/fat/alcohol; tolerance "
            f"{tolerance:.0f} kcal)",
        )
