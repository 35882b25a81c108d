"""``cmi quantize``: an fp32 ONNX model to int8, with the accuracy and speed it traded."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cmi_cli.console import info, out_console
from cmi_cli.errors import CmiError

if TYPE_CHECKING:
    from rich.console import Console

    from cmi_cli.export.quantize import QuantizeResult

PANEL = "Optimise"


class AccuracyDropError(CmiError):
    """The int8 model lost more mIoU than ``--max-miou-drop`` allows."""


def quantize_cmd(
    model: Annotated[Path, typer.Argument(help="An fp32 .onnx from 'cmi export onnx'.")],
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="static: QDQ calibrated on training images (fast on CPU); dynamic: weights "
            "only (slow for convolutions, for comparison).",
        ),
    ] = "static",
    calib_data: Annotated[
        Path | None,
        typer.Option("--calib-data", help="Dataset root for calibration. Default: the model's."),
    ] = None,
    calib_size: Annotated[
        int, typer.Option("--calib-size", min=1, help="Training images to calibrate on.")
    ] = 32,
    calib_method: Annotated[
        str, typer.Option("--calib-method", help="minmax, entropy or percentile.")
    ] = "minmax",
    per_channel: Annotated[
        bool,
        typer.Option(
            "--per-channel/--per-tensor",
            help="One weight scale per output channel (more accurate on our CNNs) or one per "
            "tensor.",
        ),
    ] = True,
    activation_type: Annotated[
        str, typer.Option("--activation-type", help="uint8 (fast on x86) or int8.")
    ] = "uint8",
    weight_type: Annotated[str, typer.Option("--weight-type", help="int8 or uint8.")] = "int8",
    max_miou_drop: Annotated[
        float,
        typer.Option(
            "--max-miou-drop",
            help="Largest accepted mIoU loss; beyond it the file is "
            "written as *.REJECTED.onnx and the command exits 1.",
        ),
    ] = 0.01,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Default: MODEL.int8.onnx beside MODEL.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset root for the comparison. Default: --calib-data."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split to compare on. Default: validation.")
    ] = None,
    opt_level: Annotated[
        str,
        typer.Option("--ort-opt-level", help="ONNX Runtime graph optimisation for scoring/timing."),
    ] = "all",
) -> None:
    """Quantize an ONNX model to int8 with ONNX Runtime and compare it with its parent.

    Prints size, batch-1 latency, validation mIoU and pixel agreement of fp32 and int8. The
    int8 file records its parent's sha256, the settings and the measured delta.
    """
    from cmi_cli.export.quantize import QuantizeSettings, quantize_onnx

    settings = QuantizeSettings(
        mode=mode,
        calib_size=calib_size,
        calib_method=calib_method,
        per_channel=per_channel,
        activation_type=activation_type,
        weight_type=weight_type,
    )
    result = quantize_onnx(
        model,
        out,
        settings,
        calib_data=calib_data,
        data_root=data,
        split=split,
        max_miou_drop=max_miou_drop,
        graph_optimization_level=opt_level,
    )
    render_quantize_result(result, out_console())
    if not result.accepted:
        raise AccuracyDropError(
            f"int8 lost {result.miou_drop:.4f} mIoU, more than --max-miou-drop "
            f"{result.max_miou_drop:g}; written as {result.path}",
            hint="Try --per-channel, --calib-method entropy or percentile, a larger "
            "--calib-size, or allow more with --max-miou-drop",
        )
    info(f"wrote {result.path}")


def render_quantize_result(result: "QuantizeResult", console: "Console") -> None:
    """Print the fp32 versus int8 table."""
    from rich.table import Table

    s = result.settings
    title = (
        f"{s.mode} int8 ({s.activation_type} activations, {s.weight_type} weights"
        f"{', per-channel' if s.per_channel else ''}) on {result.split}, {result.num_images} images"
    )
    table = Table(title=title)
    for name in ("", "fp32", "int8", "change"):
        table.add_column(name, justify="right" if name else "left")
    f, q = result.fp32, result.int8
    table.add_row(
        "size MB", f"{f.size_mb:.3f}", f"{q.size_mb:.3f}", f"{f.size_mb / q.size_mb:.2f}x smaller"
    )
    table.add_row(
        "latency ms (batch 1)",
        f"{f.latency_ms:.2f}",
        f"{q.latency_ms:.2f}",
        f"{f.latency_ms / q.latency_ms:.2f}x faster",
    )
    table.add_row("mIoU", f"{f.miou:.4f}", f"{q.miou:.4f}", f"{-result.miou_drop:+.4f}")
    table.add_row("pixel agreement", "", f"{result.pixel_agreement:.2%}", "")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Register ``cmi quantize`` on the root application."""
    app.command("quantize", rich_help_panel=PANEL)(quantize_cmd)
