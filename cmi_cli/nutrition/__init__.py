"""From a class mask to grams and nutrients per class, with the uncertainty stated.

Low layer: numpy and the standard library only (no torch), so ``cmi serve`` on ONNX and
``cmi predict`` can both use it. :func:`estimate_nutrition` is the one entry point;
:func:`load_nutrition_table` reads and validates the packaged or a user's table.
"""

from cmi_cli.nutrition.portion import (
    DEFAULT_PLATE_DIAMETER_CM,
    ClassNutrition,
    NutrientRange,
    NutritionEstimate,
    estimate_nutrition,
)
from cmi_cli.nutrition.table import (
    NutritionRow,
    NutritionTable,
    NutritionTableError,
    load_nutrition_table,
    packaged_table,
)

__all__ = [
    "DEFAULT_PLATE_DIAMETER_CM",
    "ClassNutrition",
    "NutrientRange",
    "NutritionEstimate",
    "NutritionRow",
    "NutritionTable",
    "NutritionTableError",
    "estimate_nutrition",
    "load_nutrition_table",
    "packaged_table",
]
