"""The packaged nutrition table and the validation of a user's table."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmi_cli.classes import foodseg103_class_names
from cmi_cli.errors import CmiError, DataError
from cmi_cli.nutrition import NutritionTableError, load_nutrition_table
from cmi_cli.nutrition.table import ENERGY_TOLERANCE_KCAL, ENERGY_TOLERANCE_SHARE, packaged_table

PACKAGED_CSV = Path(__file__).parents[2] / "cmi_cli" / "resources" / "nutrition.csv"


def test_packaged_table_covers_every_class_once() -> None:
    table = packaged_table()
    names = foodseg103_class_names()
    assert sorted(table.rows) == list(range(1, 104))
    ids = [
        line.split(",", 1)[0]
        for line in PACKAGED_CSV.read_text().splitlines()
        if line and not line.startswith("#") and not line.startswith("class_id")
    ]
    assert len(ids) == len(set(ids)) == 103  # no id twice in the file itself
    for cid, row in table.rows.items():
        assert row.class_name == names[cid]
    assert table.describe()["path"] == "packaged"
    assert len(table.describe()["sha256"]) == 64  # type: ignore[arg-type]


def test_packaged_values_are_plausible() -> None:
    for row in packaged_table().rows.values():
        nutrients = (row.energy_kcal, row.protein_g, row.carbohydrate_g, row.fat_g, row.fibre_g)
        assert all(v >= 0 for v in nutrients), row
        assert row.energy_kcal <= 900, row  # nothing beats pure fat (9 kcal/g)
        tolerance = max(ENERGY_TOLERANCE_KCAL, ENERGY_TOLERANCE_SHARE * row.energy_kcal)
        assert abs(row.energy_kcal - row.atwater_kcal) <= tolerance, row
        assert 0 < row.thickness_low_cm <= row.thickness_high_cm <= 10, row
        assert 0 < row.density_g_cm3 <= 1.2, row
        assert row.source, row
        assert row.source_food, row
    table = packaged_table()
    broad = {r.class_name for r in table.rows.values() if r.broad}
    assert {"sauce", "soup", "other ingredients", "cake"} <= broad
    assert table.rows[11].alcohol_g > 0  # wine's energy is mostly alcohol


def _write(tmp_path: Path, edit: dict[int, dict[str, str]] | None = None, drop: int | None = None,
           extra: str = "") -> Path:  # fmt: skip
    """The packaged table with some cells changed, a row dropped or a line added."""
    lines = PACKAGED_CSV.read_text().splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.startswith("class_id"))
    header = lines[header_at].split(",")
    import csv
    import io

    out = lines[: header_at + 1]
    for row in csv.reader(io.StringIO("\n".join(lines[header_at + 1 :]))):
        cid = int(row[0])
        if cid == drop:
            continue
        for col, value in (edit or {}).get(cid, {}).items():
            row[header.index(col)] = value
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(row)
        out.append(buf.getvalue())
    path = tmp_path / "table.csv"
    path.write_text("\n".join(out) + "\n" + extra)
    return path


def test_a_copy_of_the_packaged_table_loads(tmp_path: Path) -> None:
    table = load_nutrition_table(_write(tmp_path), foodseg103_class_names())
    assert len(table) == 103
    assert table.path.endswith("table.csv")


# Line of class id N in the packaged file: comments + header come first.
def _line_of(cid: int) -> int:
    lines = PACKAGED_CSV.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(f"{cid},"))


@pytest.mark.parametrize(
    ("edit", "column", "problem"),
    [
        ({5: {"fat_g": "-1"}}, "fat_g", "negative"),
        ({5: {"protein_g": "lots"}}, "protein_g", "not a number"),
        ({5: {"energy_kcal": "nan"}}, "energy_kcal", "not a finite number"),
        ({5: {"energy_kcal": "900"}}, "energy_kcal", "disagrees with its macronutrients"),
        ({5: {"class_id": "zero"}}, "class_id", "not a class id"),
        ({5: {"broad": "maybe"}}, "broad", "not 0/1"),
        ({5: {"source_food": ""}}, "source_food", "empty"),
        ({5: {"thickness_low_cm": "9"}}, "thickness_low_cm", "above thickness_high_cm"),
        ({5: {"density_g_cm3": "0"}}, "density_g_cm3", "must be above 0"),
        ({5: {"class_id": "6"}}, "class_id", "class id 6 appears twice"),
    ],
)
def test_a_bad_cell_is_a_named_error(
    tmp_path: Path, edit: dict[int, dict[str, str]], column: str, problem: str
) -> None:
    path = _write(tmp_path, edit)
    with pytest.raises(NutritionTableError) as info:
        load_nutrition_table(path, foodseg103_class_names())
    err = info.value
    assert isinstance(err, DataError)
    assert isinstance(err, CmiError)
    assert err.column == column
    assert problem in err.problem
    row_line = _line_of(6) if "twice" in problem else _line_of(5)
    assert err.line == row_line
    assert err.path == str(path)
    assert f"{path}:{row_line}: column {column}: " in err.one_line()


def test_a_missing_class_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, drop=42)
    load_nutrition_table(path)  # on its own the file is well formed
    with pytest.raises(NutritionTableError, match=r"no row for class id 42 \('kiwi'\)"):
        load_nutrition_table(path, foodseg103_class_names())


def test_a_class_named_differently_from_the_model_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, {3: {"class_name": "chips"}})
    with pytest.raises(NutritionTableError, match="class id 3 is 'chips' in the table"):
        load_nutrition_table(path, foodseg103_class_names())


def test_missing_column_short_row_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "no_fat.csv"
    bad.write_text("# a comment\nclass_id,class_name,energy_kcal\n1,candy,394\n")
    with pytest.raises(NutritionTableError) as info:
        load_nutrition_table(bad)
    assert (info.value.line, info.value.problem) == (2, "missing from the header")
    with pytest.raises(NutritionTableError, match="fields, the header has"):
        load_nutrition_table(_write(tmp_path, extra="104,extra,1\n"))
    with pytest.raises(NutritionTableError, match="cannot read it"):
        load_nutrition_table(tmp_path / "absent.csv")
