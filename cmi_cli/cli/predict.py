"""``cmi predict``: masks, overlays and a per-class table for many photos."""

from pathlib import Path
from typing import Annotated

import typer

from cmi_cli.console import info, out_console

PANEL = "Serve & monitor"


def predict_cmd(
    model: Annotated[
        Path,
        typer.Argument(
            help="An ONNX model (ONNX Runtime, no torch) or, with --backend torch, a .ckpt."
        ),
    ],
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (searched recursively), glob patterns (quote them), "
            "a .txt file listing paths, or a .parquet file with an image column.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("predict-out"),
    save: Annotated[
        str, typer.Option("--save", help="Comma list of mask, overlay, table.")
    ] = "mask,overlay,table",
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Photos per model call.")
    ] = 8,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Workers (see --pool), each with its own model session."
        ),
    ] = 1,
    pool: Annotated[
        str,
        typer.Option(
            "--pool",
            help="thread (no start-up cost; ONNX Runtime, decoding and numpy release the GIL "
            "for most of each photo) or process (an interpreter each).",
        ),
    ] = "thread",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", min=1, help="Inference threads per worker. (default: cores / workers)"
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Skip photos whose outputs are already in --out; keep their rows."
        ),
    ] = False,
    backend: Annotated[
        str, typer.Option("--backend", help="onnx (an .onnx model) or torch (a .ckpt).")
    ] = "onnx",
    nutrition: Annotated[
        bool,
        typer.Option(
            "--nutrition",
            help="Add estimated grams, kcal, protein, carbohydrate and fat (each with a "
            "low-high range) per class to the table, and OUT/totals.csv and .parquet per photo.",
        ),
    ] = False,
    plate_diameter_cm: Annotated[
        float | None,
        typer.Option(
            "--plate-diameter-cm",
            help="The plate's diameter for --nutrition, 5-100 cm. (default: 26)",
            show_default=False,
        ),
    ] = None,
    nutrition_table: Annotated[
        Path | None,
        typer.Option(
            "--nutrition-table",
            help="A nutrition table CSV in the packaged table's format for --nutrition. "
            "(default: the packaged FoodSeg103 table)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Segment many photos: palette PNG masks, overlays, and one table of classes per photo.

    Writes OUT/masks/NAME.png (pixel value = class id, coloured by the class palette),
    OUT/overlays/NAME.jpg, OUT/classes.csv and .parquet (one row per photo and class: pixels,
    share of plate, share of image, mean confidence), OUT/errors.csv (photos that could not be
    read, with the reason) and OUT/predict.json (model, settings, counts). NAME is the file's
    stem and a hash of its full path, so same-named photos in different folders never collide.
    With --nutrition, the table gains estimated grams and nutrients per class (with ranges and
    the assumptions) and OUT/totals.csv and .parquet give each photo's totals.

    Unreadable photos are skipped and listed; the exit status is 0 when at least one photo was
    predicted (or was already done), 1 when none could be.
    """
    from cmi_cli.predict.runner import PredictSettings, predict

    settings = PredictSettings(
        model=model,
        sources=sources,
        out=out,
        save=[s.strip() for s in save.split(",") if s.strip()],
        batch_size=batch_size,
        workers=workers,
        pool=pool,
        threads=threads,
        resume=resume,
        backend=backend,
        nutrition=nutrition,
        plate_diameter_cm=plate_diameter_cm,
        nutrition_table=nutrition_table,
    )
    result = predict(settings)
    failed = len(result.errors)
    parts = [f"predicted {result.predicted} photos"]
    if result.skipped:
        parts.append(f"{result.skipped} already done")
    if failed:
        parts.append(f"{failed} failed (see {result.out / 'errors.csv'})")
    out_console().print(
        f"{', '.join(parts)} in {result.seconds:.1f} s, {result.images_per_s:.1f} images/s "
        f"-> {result.out}",
        soft_wrap=True,
    )
    info(f"wrote {', '.join(str(p) for p in result.files)}")


def register(app: typer.Typer) -> None:
    """Register ``cmi predict`` on the root application."""
    app.command("predict", rich_help_panel=PANEL)(predict_cmd)
