"""``cmi train`` and ``cmi evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmi_cli.console import is_quiet, out_console

PANEL = "Model"


def train_cmd(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Hydra overrides: model=mini_unet trainer.max_epochs=5 data.batch_size=16 "
            "+experiment=baseline debug=tiny ...",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML file merged over the packaged and project configs."
        ),
    ] = None,
    print_cfg: Annotated[
        bool, typer.Option("--cfg", help="Print the composed config and exit.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue run.name (or the latest run) from last.ckpt."),
    ] = False,
) -> None:
    """Train a segmentation model from Hydra configs with PyTorch Lightning.

    Writes runs/NAME/: config.yaml, checkpoints/best.ckpt and last.ckpt (with lineage),
    metrics.json, history.csv, curves.png, predictions.png, train.log and model_card.md.
    """
    from cmi_cli.config import compose_train_config, config_to_yaml

    cfg = compose_train_config(list(overrides or []), config_file=config, project_root=Path.cwd())
    if print_cfg:
        typer.echo(config_to_yaml(cfg), nl=False)
        return
    from cmi_cli.training.summary import render_train_result
    from cmi_cli.training.train import train

    result = train(cfg, project_root=Path.cwd(), resume=resume, show_progress=not is_quiet())
    if result.is_global_zero:
        render_train_result(result, out_console())


def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="A checkpoint (.ckpt) from 'cmi train'.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset root. Default: the one the model was trained on."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split to score. Default: the validation split.")
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Where to write the JSON. Default: the run folder."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
) -> None:
    """Compute mIoU, pixel accuracy and per-class IoU of a model on a split."""
    import json

    from cmi_cli.training.evaluate import default_eval_json, evaluate_checkpoint
    from cmi_cli.training.summary import render_eval_result
    from cmi_cli.utils.files import atomic_write_text

    result = evaluate_checkpoint(model, data_root=data, split=split, batch_size=batch_size)
    render_eval_result(result, out_console())
    out = json_path or default_eval_json(model, result.split)
    atomic_write_text(out, json.dumps(result.to_dict(), indent=2))
    from cmi_cli.console import info

    info(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Register the model commands on the root application."""
    app.command(
        "train",
        rich_help_panel=PANEL,
        context_settings={"allow_interspersed_args": True},
    )(train_cmd)
    app.command("evaluate", rich_help_panel=PANEL)(evaluate_cmd)
