"""Typed response bodies: they document the API in the OpenAPI schema and validate answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str = Field(description="Stable machine-readable code, e.g. image_too_large.")
    message: str = Field(description="One human sentence.")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class ImageSize(BaseModel):
    """The uploaded photo's size in pixels (after EXIF rotation)."""

    width: int
    height: int


class ClassResult(BaseModel):
    """A class present in the prediction."""

    id: int = Field(description="Class id (0 = background).")
    name: str
    share: float = Field(ge=0, le=1, description="Share of the image's pixels.")
    confidence: float = Field(ge=0, le=1, description="Mean max-softmax of the class's pixels.")


class NutrientRange(BaseModel):
    """An estimate with its low-high range (two significant figures)."""

    value: float = Field(ge=0)
    low: float = Field(ge=0)
    high: float = Field(ge=0)


class ClassNutrition(BaseModel):
    """One class's estimated portion and nutrients."""

    id: int = Field(description="Class id.")
    name: str
    plate_share: float = Field(ge=0, description="Visible area as a share of the plate's area.")
    area_cm2: float = Field(ge=0, description="Visible area in cm2 at the assumed plate size.")
    grams: NutrientRange
    kcal: NutrientRange
    protein_g: NutrientRange
    carbohydrate_g: NutrientRange
    fat_g: NutrientRange
    broad: bool = Field(
        description="The class covers foods too different for one row (e.g. sauce, soup); "
        "its nutrient range is widened."
    )
    source_food: str = Field(description="The food-composition entry used for the class.")


class NutritionTotals(BaseModel):
    """Sums over the classes (ranges add up their ends)."""

    grams: NutrientRange
    kcal: NutrientRange
    protein_g: NutrientRange
    carbohydrate_g: NutrientRange
    fat_g: NutrientRange


class NutritionTableInfo(BaseModel):
    """The nutrition table used."""

    path: str = Field(description="'packaged', or the CMI_NUTRITION_TABLE path.")
    sha256: str
    rows: int


class PlateFill(BaseModel):
    """The plate's diameter as a share of the photo's shorter side."""

    low: float
    nominal: float
    high: float


class BroadComposition(BaseModel):
    """Factors on a broad class's nutrients per gram at the range's ends."""

    low: float
    high: float


class NutritionAssumptions(BaseModel):
    """What the estimate assumes; the numbers mean nothing without these."""

    plate_diameter_cm: float = Field(description="The plate's diameter used for the scale.")
    plate_diameter_source: str = Field(description="request, or config (the server's default).")
    plate_fill: PlateFill
    image_size: ImageSize
    broad_composition: BroadComposition
    method: str
    table: NutritionTableInfo
    significant_figures: int


class NutritionEstimate(BaseModel):
    """Estimated grams and nutrients per class and in total, with ranges and assumptions."""

    classes: list[ClassNutrition] = Field(description="Food classes, largest mass first.")
    total: NutritionTotals
    assumptions: NutritionAssumptions


class SegmentResponse(BaseModel):
    """The segmentation of one photo."""

    request_id: str
    model_id: str = Field(description="<model name>-<first 12 hex of the model file's sha256>")
    image: ImageSize
    inference_ms: float = Field(description="Model time (a batch call's share per image).")
    latency_ms: float = Field(description="Server time from decoding to the encoded answer.")
    mean_confidence: float = Field(ge=0, le=1)
    classes: list[ClassResult] = Field(description="Classes present, largest share first.")
    overlay_jpeg_base64: str | None = Field(
        None, description="The overlay as base64 JPEG, with ?overlay=true."
    )
    nutrition: NutritionEstimate | None = Field(
        None, description="Estimated portions and nutrients, with ?nutrition=true."
    )


class BatchItem(BaseModel):
    """The outcome for one image of a batch: a result or an error."""

    filename: str | None
    status: int = Field(description="The HTTP status this image alone would have had.")
    result: SegmentResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    """Per-image results of ``POST /v1/segment/batch``, in upload order."""

    model_id: str
    count: int
    results: list[BatchItem]


class ModelClass(BaseModel):
    """A class the model knows."""

    id: int
    name: str
    color: str = Field(description="Overlay colour, #rrggbb.")


class ModelResponse(BaseModel):
    """The served model: identity, classes, input, metrics and lineage."""

    id: str
    name: str
    backend: str
    sha256: str
    input_size: int = Field(description="Side of the square the photo is resized to.")
    num_classes: int
    classes: list[ModelClass]
    preprocessing: dict[str, Any]
    metrics: dict[str, float]
    lineage: dict[str, Any]


class HealthResponse(BaseModel):
    """Liveness."""

    status: str = "ok"


class ReadyResponse(BaseModel):
    """Readiness: the model is loaded and warmed up."""

    status: str = "ready"
    model_id: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring the error shape for ``statuses``."""
    text = {
        400: "Not a valid image (empty, truncated or corrupt).",
        401: "Missing or wrong API key.",
        413: "Body over the upload limit, or an image with too many pixels.",
        415: "Not an image, or not JPEG/PNG/WebP.",
        422: "No file, a wrong field, or a bad query parameter.",
        503: "Overloaded (see Retry-After) or not ready.",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error.")} for s in statuses}
