"""The portion maths on hand-made masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmi_cli.classes import foodseg103_class_names
from cmi_cli.errors import DataError, UsageError
from cmi_cli.nutrition import estimate_nutrition, packaged_table
from cmi_cli.nutrition.portion import PLATE_FILL, significant

NAMES = foodseg103_class_names()
RICE, SAUCE = 66, 52


def plate_disc(side: int, fill: float = PLATE_FILL[1]) -> tuple[np.ndarray, np.ndarray]:
    """A square photo's pixel grid and the disc of the plate at the nominal fill."""
    yy, xx = np.mgrid[0:side, 0:side]
    c = (side - 1) / 2
    return xx, (xx - c) ** 2 + (yy - c) ** 2 <= (fill * side / 2) ** 2


def test_half_a_plate_of_rice_gives_half_the_plate_area_and_its_grams() -> None:
    side, diameter = 400, 26.0
    xx, disc = plate_disc(side)
    mask = np.zeros((side, side), np.uint8)
    mask[disc & (xx < side / 2)] = RICE
    est = estimate_nutrition(mask, NAMES, diameter)

    (rice,) = est.classes
    plate_area = math.pi * diameter**2 / 4
    assert rice.plate_share == pytest.approx(0.5, abs=0.01)
    assert rice.area_cm2 == significant(plate_area / 2) == 270  # 265.5 cm2
    row = packaged_table().rows[RICE]  # 1.5-4 cm deep, 0.67 g/cm3
    area = int((mask == RICE).sum()) * (diameter / (PLATE_FILL[1] * side)) ** 2
    grams = area * (row.thickness_low_cm + row.thickness_high_cm) / 2 * row.density_g_cm3
    assert grams == pytest.approx(plate_area / 2 * 2.75 * 0.67, rel=0.01)  # about 489 g
    assert rice.grams.value == significant(grams) == 490
    assert rice.kcal.value == significant(grams * 1.30) == 640
    assert rice.carbohydrate_g.value == significant(grams * 0.282)
    # low: plate spans the whole side (smaller pixels), thinnest layer; high: the opposite
    assert rice.grams.low == significant(area * (0.9 / 1.0) ** 2 * 1.5 * 0.67)
    assert rice.grams.high == significant(area * (0.9 / 0.8) ** 2 * 4 * 0.67)
    assert rice.grams.low < rice.grams.value < rice.grams.high
    assert est.total["grams"] == rice.grams
    assert est.assumptions["plate_diameter_cm"] == 26.0
    assert est.assumptions["table"]["path"] == "packaged"


def test_grams_scale_with_the_square_of_the_plate_diameter() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[20:60, 20:60] = RICE
    small = estimate_nutrition(mask, NAMES, 20.0).classes[0]
    large = estimate_nutrition(mask, NAMES, 40.0).classes[0]
    assert large.area_cm2 == pytest.approx(4 * small.area_cm2, rel=0.05)
    assert large.grams.value == pytest.approx(4 * small.grams.value, rel=0.05)
    assert small.plate_share == large.plate_share  # the share does not depend on the scale


def test_a_resized_mask_is_scaled_to_the_photo() -> None:
    # A 32x32 model mask of a 640x480 photo: shares carry over, the scale is the photo's.
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = RICE
    est = estimate_nutrition(mask, NAMES, 26.0, image_size=(640, 480))
    px = 0.5 * 640 * 480
    expected = px * (26.0 / (0.9 * 480)) ** 2
    assert est.classes[0].area_cm2 == significant(expected)
    assert est.assumptions["image_size"] == {"width": 640, "height": 480}


def test_background_is_ignored_and_classes_sum_to_the_total() -> None:
    mask = np.zeros((60, 60), np.uint8)
    mask[:30, :30] = RICE
    mask[30:, 30:] = 84  # carrot
    mask[:10, 50:] = SAUCE
    est = estimate_nutrition(mask, NAMES, 26.0)
    ids = [c.class_id for c in est.classes]
    assert 0 not in ids
    assert sorted(ids) == [SAUCE, RICE, 84]
    grams = [c.grams.value for c in est.classes]
    assert grams == sorted(grams, reverse=True)
    assert est.total["kcal"].value == pytest.approx(sum(c.kcal.value for c in est.classes), rel=0.1)
    records = est.records()
    assert {"grams", "grams_low", "grams_high", "kcal", "kcal_low", "kcal_high", "protein_g",
            "carbohydrate_g", "fat_g", "fat_g_high"} <= set(records[0])  # fmt: skip
    assert est.total_record()["kcal"] == est.total["kcal"].value


def test_a_broad_class_widens_its_nutrient_range_not_its_grams() -> None:
    mask = np.zeros((50, 50), np.uint8)
    mask[:25] = SAUCE
    (sauce,) = estimate_nutrition(mask, NAMES, 26.0).classes
    assert sauce.broad
    ratio_grams = sauce.grams.high / sauce.grams.low
    ratio_kcal = sauce.kcal.high / sauce.kcal.low
    assert ratio_kcal == pytest.approx(ratio_grams * 3, rel=0.1)  # x1.5 / x0.5


def test_low_confidence_lowers_the_low_end() -> None:
    mask = np.zeros((50, 50), np.uint8)
    mask[:25] = RICE
    sure = estimate_nutrition(mask, NAMES, 26.0, confidence={RICE: 1.0}).classes[0]
    unsure = estimate_nutrition(mask, NAMES, 26.0, confidence={RICE: 0.5}).classes[0]
    assert unsure.grams.low == pytest.approx(sure.grams.low / 2, rel=0.05)
    assert (unsure.grams.value, unsure.grams.high) == (sure.grams.value, sure.grams.high)


def test_background_only_gives_zero_and_bad_input_is_refused() -> None:
    est = estimate_nutrition(np.zeros((8, 8), np.uint8), NAMES, 26.0)
    assert est.classes == []
    assert est.total["kcal"].value == 0
    for bad in (0.0, 4.9, 101.0, float("nan")):
        with pytest.raises(UsageError, match="plate diameter"):
            estimate_nutrition(np.zeros((8, 8), np.uint8), NAMES, bad)
    with pytest.raises(DataError, match="class id 120"):
        estimate_nutrition(np.full((4, 4), 120, np.uint8), NAMES, 26.0)
    with pytest.raises(DataError, match="H x W"):
        estimate_nutrition(np.zeros((2, 2, 3), np.uint8), NAMES, 26.0)


def test_significant_figures() -> None:
    assert [significant(v) for v in (137.0, 0.0342, 1449.0, 0.0, 9.96)] == [
        140.0, 0.034, 1400.0, 0.0, 10.0,
    ]  # fmt: skip
