"""``cmi profile``: where time and memory go in training, inference and data loading."""

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cmi_cli.console import info, out_console
from cmi_cli.errors import UsageError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from cmi_cli.profiling.torch_profile import TorchProfile

PANEL = "Optimise"


class Target(str, Enum):
    """What ``cmi profile`` measures."""

    train = "train"
    inference = "inference"
    data = "data"


def _parse_workers(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise UsageError(
            f"--workers must list worker counts like 0,1,2, got {text!r}",
            hint="pass non-negative integers separated by commas",
        )
    return counts


def profile_cmd(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Hydra overrides, as for 'cmi train': model=mini_unet data.batch_size=16 ...",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        Target, typer.Option("--target", "-t", help="What to profile.", case_sensitive=False)
    ] = Target.train,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            "-n",
            min=1,
            help="Steps recorded (train, inference; default 5) or batches timed per repeat "
            "(data; default 20).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder. Default: profiles/<target>-<time>/."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML file merged over the packaged and project configs."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Profile inference of this trained checkpoint (.ckpt)."),
    ] = None,
    workers: Annotated[
        str, typer.Option("--workers", help="Data target: worker counts to time, e.g. 0,1,2.")
    ] = "0,1,2",
) -> None:
    """Profile training or inference with torch.profiler, or the data pipeline.

    [bold]train[/bold], [bold]inference[/bold]: a Chrome/Perfetto trace (trace.json), a
    TensorBoard trace (tensorboard/) and the top operators by self CPU time (and CUDA time on
    a GPU), also in top_ops.txt.

    [bold]data[/bold]: images per second per worker count, from the photos and from the packed
    cache of 'cmi data prepare', the hottest functions (cProfile), and the settings to use.
    """
    from cmi_cli.profiling.torch_profile import default_profile_dir

    if checkpoint is not None and (target is not Target.inference or overrides or config):
        raise UsageError(
            "--checkpoint profiles a trained model's inference and takes no config",
            hint="use --target inference --checkpoint CKPT, without overrides or --config",
        )
    out_dir = out if out is not None else default_profile_dir(target.value)
    if target is Target.inference and checkpoint is not None:
        from cmi_cli.profiling.torch_profile import profile_inference

        result = profile_inference(checkpoint=checkpoint, steps=steps or 5, out_dir=out_dir)
        _report_torch(result)
        return
    from cmi_cli.config import compose_train_config

    cfg = compose_train_config(list(overrides or []), config_file=config, project_root=Path.cwd())
    if target is Target.data:
        _profile_data(cfg, _parse_workers(workers), steps or 20, out_dir)
    elif target is Target.inference:
        from cmi_cli.profiling.torch_profile import profile_inference

        _report_torch(profile_inference(cfg, steps=steps or 5, out_dir=out_dir))
    else:
        from cmi_cli.profiling.torch_profile import profile_training

        _report_torch(profile_training(cfg, Path.cwd(), steps=steps or 5, out_dir=out_dir))


def _report_torch(result: "TorchProfile") -> None:
    from cmi_cli.profiling.torch_profile import render_top_ops

    render_top_ops(result, out_console())
    per_step = 1000 * result.seconds / max(1, result.steps)
    info(f"{result.steps} {result.target} steps recorded, {per_step:.0f} ms per step (profiled)")
    info(f"Chrome/Perfetto trace: {result.trace} (open it in https://ui.perfetto.dev)")
    info(f"TensorBoard: tensorboard --logdir {result.tensorboard_dir}")
    info(f"table: {result.table}")


def _profile_data(cfg: "DictConfig", workers: list[int], batches: int, out_dir: Path) -> None:
    from omegaconf import OmegaConf

    from cmi_cli.data.config import DataConfig
    from cmi_cli.profiling.data_profile import profile_data, render_data_profile

    mapping = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg = DataConfig.from_mapping(mapping)  # type: ignore[arg-type]
    result = profile_data(data_cfg, Path.cwd(), workers=workers, batches=batches, out_dir=out_dir)
    render_data_profile(result, out_console())
    info(f"wrote {out_dir / 'data_profile.json'}, hotspots.txt and loader.pstats (snakeviz)")


def register(app: typer.Typer) -> None:
    """Register ``cmi profile`` on the root application."""
    app.command(
        "profile", rich_help_panel=PANEL, context_settings={"allow_interspersed_args": True}
    )(profile_cmd)
