"""``cmi prune``: structured channel pruning of a checkpoint, with before/after measurements."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cmi_cli.console import info, is_quiet, out_console

if TYPE_CHECKING:
    from rich.console import Console

    from cmi_cli.export.prune import PruneResult

PANEL = "Optimise"


def prune_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint (.ckpt) from 'cmi train'.")],
    ratio: Annotated[
        float,
        typer.Option(
            "--ratio",
            "-r",
            help="Share of channels removed per layer group (0.5 halves every width, which "
            "removes about 3/4 of parameters and FLOPs).",
        ),
    ] = 0.5,
    finetune_epochs: Annotated[
        int,
        typer.Option(
            "--finetune-epochs", min=0, help="Epochs of training after pruning (0: none)."
        ),
    ] = 5,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write. Default: RUN/pruned-r<R>.ckpt."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset root. Default: the one the model was trained on."),
    ] = None,
    round_to: Annotated[
        int, typer.Option("--round-to", min=1, help="Keep channel counts multiples of this.")
    ] = 8,
) -> None:
    """Prune channels with torch-pruning, fine-tune, and save a smaller checkpoint.

    Prints parameters, GFLOPs, batch-1 latency (eager PyTorch, channels_last) and validation
    mIoU before and after. The checkpoint records the pruned layer sizes, so 'cmi evaluate',
    'cmi export onnx' and 'cmi benchmark' load it like any other.
    """
    from cmi_cli.export.prune import prune_checkpoint

    result = prune_checkpoint(
        checkpoint,
        ratio,
        finetune_epochs=finetune_epochs,
        out=out,
        data_root=data,
        round_to=round_to,
        show_progress=not is_quiet(),
    )
    render_prune_result(result, out_console())
    info(f"wrote {result.path}")


def render_prune_result(result: "PruneResult", console: "Console") -> None:
    """Print parameters, GFLOPs, latency and mIoU before and after pruning."""
    from rich.table import Table

    table = Table(title=f"pruned {result.ratio:g} of channels, {result.finetune_epochs} epochs")
    for name in ("", "before", "after", "change"):
        table.add_column(name, justify="right" if name else "left")
    b, a = result.before, result.after
    rows = [
        (
            "parameters",
            f"{b.parameters:,}",
            f"{a.parameters:,}",
            _ratio(b.parameters, a.parameters),
        ),
        ("GFLOPs", f"{b.gflops:.3f}", f"{a.gflops:.3f}", _ratio(b.gflops, a.gflops)),
        (
            "latency ms (batch 1)",
            f"{b.latency_ms:.2f}",
            f"{a.latency_ms:.2f}",
            f"{_ratio(b.latency_ms, a.latency_ms)} faster",
        ),
        ("mIoU", _fmt(b.miou), _fmt(a.miou), _diff(b.miou, a.miou)),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _ratio(before: float | None, after: float | None) -> str:
    if not before or not after:
        return "n/a"
    return f"{before / after:.2f}x"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _diff(before: float | None, after: float | None) -> str:
    return "n/a" if before is None or after is None else f"{after - before:+.4f}"


def register(app: typer.Typer) -> None:
    """Register ``cmi prune`` on the root application."""
    app.command("prune", rich_help_panel=PANEL)(prune_cmd)
