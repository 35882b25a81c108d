"""``?nutrition=true``: the portion and nutrient estimate of a segmented photo.

The table is read and validated when the app is built, so a bad ``CMI_NUTRITION_TABLE`` stops
the server at start-up with one line; whether it covers the served model's classes is checked
once, on the first request that asks for nutrition.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request

from cmi_cli.errors import CmiError
from cmi_cli.nutrition import NutritionTable, estimate_nutrition, load_nutrition_table
from cmi_cli.nutrition.portion import PLATE_DIAMETER_LIMITS_CM
from cmi_cli.serving.errors import ClientError
from cmi_cli.serving.predictor import ServedModel
from cmi_cli.serving.service import ImageResult
from cmi_cli.serving.settings import ServeSettings

NutritionQuery = Annotated[
    bool, Query(description="Add estimated grams, kcal and macronutrients per class and in total.")
]
PlateQuery = Annotated[
    float | None,
    Query(
        ge=PLATE_DIAMETER_LIMITS_CM[0],
        le=PLATE_DIAMETER_LIMITS_CM[1],
        description="The plate's diameter in cm for ?nutrition=true (default: the server's, "
        "CMI_PLATE_DIAMETER_CM, 26 unless set).",
    ),
]


def load_table(settings: ServeSettings) -> NutritionTable:
    """The table the server uses: ``settings.nutrition_table`` or the packaged one.

    Raises:
        NutritionTableError: If the configured table is missing or invalid.
    """
    return load_nutrition_table(settings.nutrition_table)


def nutrition_json(
    request: Request, model: ServedModel, result: ImageResult, plate_diameter_cm: float | None
) -> dict[str, Any]:
    """The ``nutrition`` member of a segment answer for one processed image.

    Raises:
        ClientError: 422 when the table has no row for a class of the served model.
    """
    state = request.app.state
    table: NutritionTable = state.nutrition_table
    settings: ServeSettings = state.settings
    checked = getattr(state, "nutrition_checked", None)
    if checked != model.id:
        try:
            table.check_classes(model.class_names)
        except CmiError as exc:
            raise ClientError(422, "nutrition_unavailable", exc.message) from None
        state.nutrition_checked = model.id
    if plate_diameter_cm is None:
        diameter, source = settings.plate_diameter_cm, "config"
    else:
        diameter, source = plate_diameter_cm, "request"
    estimate = estimate_nutrition(
        result.segmentation.mask,
        model.class_names,
        diameter,
        table,
        image_size=(result.width, result.height),
        confidence={c.id: c.confidence for c in result.classes},
        plate_diameter_source=source,
    )
    return estimate.to_dict()
