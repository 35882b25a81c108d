"""``cmi benchmark``: every format of a model side by side on this machine."""

from pathlib import Path
from typing import Annotated

import typer

from cmi_cli.console import info, out_console
from cmi_cli.errors import CmiError, UsageError

PANEL = "Optimise"


class BelowFloorError(CmiError):
    """A format scored under ``--min-miou`` (or failed)."""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(
            f"--batch {text!r} is not a comma list of integers", hint="Try 1,8"
        ) from None
    return values


def benchmark_cmd(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="A checkpoint (.ckpt) from 'cmi train'; several with --zoo."),
    ],
    formats: Annotated[
        str,
        typer.Option(
            "--formats",
            help="Comma list of torch, torch-compile, onnx, onnx-int8, pruned, pruned-onnx, "
            "baseline (the original project's mini_unet in eager PyTorch).",
        ),
    ] = "torch,torch-compile,onnx,onnx-int8,pruned,baseline",
    batch: Annotated[str, typer.Option("--batch", help="Comma list of batch sizes.")] = "1,8",
    size: Annotated[
        int | None,
        typer.Option(
            "--size", help="Input height and width. Default: the model's training size (lineage)."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset for mIoU (validation split). Default: the model's."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder for artifacts and reports. Default: RUN/benchmark."
        ),
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed rounds.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls first.")] = 2,
    ort_opt_level: Annotated[
        str,
        typer.Option(
            "--ort-opt-level",
            help="ONNX Runtime graph optimisation: disable, basic, extended or all.",
        ),
    ] = "all",
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="ONNX Runtime intra-op threads.")
    ] = None,
    prune_ratio: Annotated[
        float, typer.Option("--prune-ratio", help="For the pruned format.")
    ] = 0.5,
    prune_finetune_epochs: Annotated[
        int,
        typer.Option("--prune-finetune-epochs", min=0, help="Fine-tuning of the pruned format."),
    ] = 2,
    pruned: Annotated[
        Path | None,
        typer.Option("--pruned", help="Use this pruned checkpoint instead of pruning now."),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="A trained mini_unet checkpoint (else latency only)."),
    ] = None,
    min_miou: Annotated[
        float | None,
        typer.Option("--min-miou", help="Exit 1 when any format scores below this (or fails)."),
    ] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Time only; skip mIoU.")] = False,
    zoo: Annotated[
        bool,
        typer.Option(
            "--zoo",
            help="Quality against latency of several checkpoints: one table (zoo.csv, .md) and "
            "a scatter (zoo.png) of mIoU against fp32 and int8 ONNX latency at batch 1, with "
            "parameters, GFLOPs and sizes. Trains nothing; uses --size, --repeats, --warmup, "
            "--threads, --data and --out (default: benchmark-zoo).",
        ),
    ] = False,
) -> None:
    """Export or build each format, then measure all of them side by side in one run.

    Interleaved repeats after a warm-up; per format and batch size: status, size, validation
    mIoU, p50/p90 latency per image, throughput, speed-up over eager PyTorch, and achieved
    GFLOP/s against this CPU's measured matmul peak. Writes benchmark.csv, .json and .md.
    """
    if zoo:
        from cmi_cli.export.bench_zoo import benchmark_zoo, to_markdown

        result_zoo = benchmark_zoo(
            checkpoints,
            out or Path("benchmark-zoo"),
            size=size or 256,  # one size for every model, so their costs compare
            repeats=repeats,
            warmup=warmup,
            threads=threads,
            data_root=data,
        )
        out_console().print(to_markdown(result_zoo), markup=False, soft_wrap=True)
        info(f"wrote {', '.join(str(p) for p in result_zoo.files)}")
        return
    if len(checkpoints) != 1:
        raise UsageError(f"{len(checkpoints)} checkpoints given", hint="Compare several with --zoo")
    checkpoint = checkpoints[0]
    from cmi_cli.export.bench_report import render_benchmark
    from cmi_cli.export.benchmark import BenchmarkSettings, benchmark_checkpoint

    settings = BenchmarkSettings(
        formats=[f.strip() for f in formats.split(",") if f.strip()],
        batches=_int_list(batch),
        size=size,
        repeats=repeats,
        warmup=warmup,
        ort_opt_level=ort_opt_level,
        threads=threads,
        prune_ratio=prune_ratio,
        prune_finetune_epochs=prune_finetune_epochs,
        pruned_checkpoint=pruned,
        baseline_checkpoint=baseline,
        evaluate=not no_eval,
    )
    result = benchmark_checkpoint(checkpoint, settings, data_root=data, out_dir=out)
    render_benchmark(result, out_console())
    info(f"wrote {', '.join(str(p) for p in result.files)}")
    if min_miou is not None:
        low = result.below(min_miou)
        if low:
            raise BelowFloorError(
                f"below --min-miou {min_miou:g} or failed: {', '.join(low)}",
                hint="See the table; a failed format names its reason under it",
            )


def register(app: typer.Typer) -> None:
    """Register ``cmi benchmark`` on the root application."""
    app.command("benchmark", rich_help_panel=PANEL)(benchmark_cmd)
