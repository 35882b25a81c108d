"""``cmi train`` and ``cmi evaluate``."""

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

    Model presets (model=NAME): fast_unet (the default), mini_unet, and the zoo of
    segmentation-models-pytorch: mobile (FPN on MobileNetV3), cnn (UPerNet on ConvNeXt-Tiny),
    transformer (SegFormer on MiT-B2) and smp (model.arch=Unet|FPN|DeepLabV3Plus|Segformer|UPerNet
    model.encoder=NAME model.encoder_weights=imagenet|none|FILE). Image sizes: resolution=256px or
    512px. 'cmi info --models' lists the presets with their settings.

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
    model: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint (.ckpt) from 'cmi train' or an ONNX model (.onnx, run with "
            "ONNX Runtime)."
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset root. Default: the one the model was trained on."),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Split to score. Default: the held-out test split ('validation' in the parquet "
            "export). 'val' is the share of train that picked the checkpoint.",
        ),
    ] = None,
    resolution: Annotated[
        str,
        typer.Option(
            "--resolution",
            help="Where to score: 'label' upsamples the logits to each annotation's own size "
            "(as FoodSeg103 papers report); 'model' scores at the training size.",
        ),
    ] = "label",
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Where to write the JSON. Default: the run folder."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    corruptions: Annotated[
        str | None,
        typer.Option(
            "--corruptions",
            help="Also measure robustness under these corruptions: a comma list of brightness, "
            "contrast, blur, noise, jpeg (or all).",
            rich_help_panel="Robustness",
        ),
    ] = None,
    severities: Annotated[
        str,
        typer.Option(
            "--severities",
            help="Severities: a range or list in 1..5.",
            rich_help_panel="Robustness",
        ),
    ] = "1-5",
    window: Annotated[
        int,
        typer.Option(
            "--window", min=10, help="Photos per drift check.", rich_help_panel="Robustness"
        ),
    ] = 100,
) -> None:
    """Compute mIoU, pixel accuracy and per-class IoU of a model on a split.

    With --corruptions, measure mIoU under each corruption and severity and how often the
    drift check flags it; write robustness.png, robustness.json and robustness_card.md to the
    model's folder.
    """
    import json

    if corruptions is not None:
        _robustness(model, data, split, batch_size, corruptions, severities, window)
        return

    from cmi_cli.training.evaluate import default_eval_json, evaluate_model
    from cmi_cli.training.summary import render_eval_result
    from cmi_cli.utils.files import atomic_write_text

    result = evaluate_model(
        model, data_root=data, split=split, batch_size=batch_size, resolution=resolution
    )
    render_eval_result(result, out_console())
    out = json_path or default_eval_json(model, result.split)
    atomic_write_text(out, json.dumps(result.to_dict(), indent=2))
    from cmi_cli.console import info

    info(f"wrote {out}")


def _robustness(
    model: Path,
    data: Path | None,
    split: str | None,
    batch_size: int,
    corruptions: str,
    severities: str,
    window: int,
) -> None:
    from cmi_cli.console import info
    from cmi_cli.monitoring.corruptions import parse_corruptions, parse_severities
    from cmi_cli.monitoring.robustness import (
        evaluate_robustness,
        render_robustness,
        write_robustness,
    )

    result = evaluate_robustness(
        model,
        parse_corruptions(corruptions),
        parse_severities(severities),
        data_root=data,
        split=split,
        window=window,
        batch_size=batch_size,
    )
    render_robustness(result, out_console())
    paths = write_robustness(result)
    info(f"wrote {', '.join(str(p) for p in paths.values())}")


def register(app: typer.Typer) -> None:
    """Register the model commands on the root application."""
    app.command(
        "train",
        rich_help_panel=PANEL,
        context_settings={"allow_interspersed_args": True},
    )(train_cmd)
    app.command("evaluate", rich_help_panel=PANEL)(evaluate_cmd)
