"""``cmi init``, ``cmi quickstart`` and ``cmi info``: whole-project commands."""

from pathlib import Path
from typing import Annotated

import typer

from cmi_cli.console import info, is_quiet, out_console
from cmi_cli.paths import SAMPLE_IMAGES

PANEL = "Project"


def init(
    directory: Annotated[Path, typer.Argument(help="Project folder (created if missing).")] = Path(
        "."
    ),
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote",
            help="DVC remote URL: a local folder (default: inside the project) or gs://bucket/path.",
        ),
    ] = None,
    no_sample: Annotated[
        bool, typer.Option("--no-sample", help="Do not generate the sample dataset.")
    ] = False,
    images: Annotated[int, typer.Option("--images", help="Photos in the sample.")] = SAMPLE_IMAGES,
    size: Annotated[int, typer.Option("--size", help="Side of the sample photos.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample.")] = 0,
) -> None:
    """Make a ready project: git + DVC repo, configs/, sample data tracked and pushed, dvc.yaml."""
    from cmi_cli.project import init_project

    result = init_project(
        directory,
        remote=remote,
        with_sample=not no_sample,
        sample_images=images,
        sample_size=size,
        seed=seed,
        show_progress=not is_quiet(),
    )
    info(f"[green]initialised[/green] {result.root}")
    if result.data_version:
        info(f"  data      {result.data_root} (md5 {result.data_version})")
    info(f"  remote    {result.remote_url}")
    info("  next      cd into it and run 'cmi data validate' or 'cmi quickstart .'")


def quickstart(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Project folder. Default: ./cmi-quickstart (reused when present)."),
    ] = None,
    images: Annotated[int, typer.Option("--images", help="Photos in the sample.")] = SAMPLE_IMAGES,
    size: Annotated[int, typer.Option("--size", help="Side of the sample photos.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample.")] = 0,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--override",
            "-o",
            help="Training override over params.yaml, e.g. -o trainer.max_epochs=5 (repeatable).",
        ),
    ] = None,
    step: Annotated[
        list[str] | None,
        typer.Option(
            "--step",
            help="Run only this step again (repeatable): init, data-pull, validate, stats, "
            "train, evaluate, export, quantize, drift-check, benchmark. Earlier steps' "
            "artifacts come from the project's latest run.",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline on the embedded sample and print a summary.

    The steps, in order: init (git + DVC project with the sample), data pull, validate, stats,
    train, evaluate (test split), export onnx, quantize (int8), drift-check, benchmark. An
    existing project is reused; it stops at the first failing step and exits 1.
    """
    from cmi_cli.quickstart import render_quickstart, run_quickstart

    result = run_quickstart(
        directory or Path("cmi-quickstart"),
        images=images,
        size=size,
        seed=seed,
        show_progress=not is_quiet(),
        overrides=list(override or []),
        only=list(step or []) or None,
    )
    render_quickstart(result, out_console())
    if not result.ok:
        raise typer.Exit(1)


def info_cmd(
    path: Annotated[
        Path | None,
        typer.Argument(help="A dataset folder, a checkpoint (.ckpt) or an ONNX model (.onnx)."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
    models: Annotated[
        bool,
        typer.Option("--models", help="List the model presets (model=NAME) for 'cmi train'."),
    ] = False,
) -> None:
    """Print what a dataset, checkpoint or ONNX model says of itself, with its lineage.

    A dataset: layout, images per split, class count and DVC version. A checkpoint or ONNX
    model (int8 included): its lineage (classes, preprocessing, data version, code version and
    commit, metrics, architecture, encoder and weights), size and cost, and for ONNX the graph
    and its validation checks. With --models, list the model presets instead: mobile, cnn,
    transformer, smp (any architecture and encoder), fast_unet (the default) and mini_unet.
    """
    import json

    if models:
        from cmi_cli.info import render_presets
        from cmi_cli.models.presets import model_presets

        presets = model_presets(Path.cwd())
        if json_out:
            typer.echo(json.dumps(presets, indent=2))
        else:
            render_presets(presets, out_console())
        return
    if path is None:
        from cmi_cli.errors import UsageError

        raise UsageError(
            "cmi info needs a PATH (dataset, .ckpt or .onnx), or --models",
            hint="For example: cmi info runs/NAME/checkpoints/best.ckpt",
        )
    from cmi_cli.info import describe, render_description

    record = describe(path)
    if json_out:
        typer.echo(json.dumps(record, indent=2, default=str))
    else:
        render_description(record, out_console())


def register(app: typer.Typer) -> None:
    """Register the project commands on the root application."""
    app.command("init", rich_help_panel=PANEL)(init)
    app.command("quickstart", rich_help_panel=PANEL)(quickstart)
    app.command("info", rich_help_panel=PANEL)(info_cmd)
