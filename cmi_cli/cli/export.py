"""``cmi export``: turn a checkpoint into a deployable model (``cmi export onnx``)."""

from pathlib import Path
from typing import Annotated

import typer

from cmi_cli.console import info, out_console

app = typer.Typer(
    help="Export a checkpoint to a deployable format, validated against PyTorch.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command("onnx")
def onnx_cmd(
    checkpoint: Annotated[
        Path, typer.Argument(help="A .ckpt from 'cmi train' (or its run folder).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Where to write. Default: RUN/model.onnx, else CKPT.onnx beside it."
        ),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version (11..20).")] = 17,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic/--static",
            help="Dynamic batch, height and width; or a fixed [1, 3, H, W] input.",
        ),
    ] = True,
    height: Annotated[
        int | None,
        typer.Option("--height", min=1, help="Input height (static). Default: the model's."),
    ] = None,
    width: Annotated[
        int | None,
        typer.Option("--width", min=1, help="Input width (static). Default: the model's."),
    ] = None,
    atol: Annotated[
        float,
        typer.Option("--atol", help="Absolute part of the allowed |ONNX - PyTorch| of logits."),
    ] = 1e-4,
    rtol: Annotated[
        float,
        typer.Option(
            "--rtol",
            help="Relative part: a logit may differ by atol + rtol x the image's max |logit|.",
        ),
    ] = 1e-4,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset for validation images. Default: the model's."),
    ] = None,
    images: Annotated[
        int, typer.Option("--images", min=1, help="Validation images to compare on.")
    ] = 4,
) -> None:
    """Export a checkpoint to ONNX, validate it against PyTorch, and record its lineage.

    Checks: onnx.checker, names, shapes, logits within --atol + --rtol x max |logit| of
    PyTorch on real images.
    Also: argmax agreement, and other batch and image sizes. No file unless all pass.
    """
    from cmi_cli.export.errors import OnnxValidationError
    from cmi_cli.export.onnx_export import export_onnx
    from cmi_cli.export.validate_onnx import render_report

    try:
        result = export_onnx(
            checkpoint,
            out,
            opset=opset,
            dynamic=dynamic,
            height=height,
            width=width,
            atol=atol,
            rtol=rtol,
            data_root=data,
            num_images=images,
            project_root=Path.cwd(),
        )
    except OnnxValidationError as exc:
        render_report(exc.report, out_console())
        raise
    render_report(result.report, out_console())
    size_mb = result.size_bytes / 1e6
    info(f"[green]wrote[/green] {result.path} ({size_mb:.2f} MB, opset {opset})")


def register(root: typer.Typer) -> None:
    """Register the ``export`` group on the root application."""
    root.add_typer(app, name="export", rich_help_panel="Optimise")
