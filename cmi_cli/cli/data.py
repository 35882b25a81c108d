"""``cmi data``: make, bring in, check, describe and version datasets."""

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cmi_cli.console import err_console, info, is_quiet, out_console
from cmi_cli.paths import SAMPLE_IMAGES

app = typer.Typer(
    help="Make, bring in, check, describe and version datasets (DVC).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

RootArg = Annotated[
    Path | None,
    typer.Argument(help="Dataset root (official layout or parquet). Default: data/foodseg103."),
]
TargetsArg = Annotated[
    list[str] | None, typer.Argument(help="DVC-tracked paths or .dvc files. Default: all.")
]
RemoteOpt = Annotated[
    str | None, typer.Option("--remote", "-r", help="DVC remote name. Default: the project's.")
]
JobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Parallel transfers.")]
ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-C", help="Project folder. Default: the one holding the cwd."),
]


@app.command(rich_help_panel="Versioning (DVC)")
def pull(
    targets: TargetsArg = None,
    remote: RemoteOpt = None,
    jobs: JobsOpt = None,
    project: ProjectOpt = None,
) -> None:
    """Download tracked data from the DVC remote into the workspace."""
    from cmi_cli.data import versioning

    result = versioning.pull(targets or None, remote=remote, jobs=jobs, cwd=project)
    info(f"[green]pulled[/green] {result.summary()}")


@app.command(rich_help_panel="Versioning (DVC)")
def push(
    targets: TargetsArg = None,
    remote: RemoteOpt = None,
    jobs: JobsOpt = None,
    project: ProjectOpt = None,
) -> None:
    """Upload tracked data from the workspace to the DVC remote."""
    from cmi_cli.data import versioning

    result = versioning.push(targets or None, remote=remote, jobs=jobs, cwd=project)
    info(f"[green]pushed[/green] {result.summary()}")


@app.command(rich_help_panel="Versioning (DVC)")
def status(
    targets: TargetsArg = None,
    remote: RemoteOpt = None,
    project: ProjectOpt = None,
) -> None:
    """Show tracked data that changed locally or is missing from the remote."""
    from cmi_cli.data import versioning

    result = versioning.status(targets or None, remote=remote, cwd=project)
    versioning.render_status(result, out_console())


@app.command(rich_help_panel="Datasets")
def sample(
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")] = Path(
        "data/foodseg103"
    ),
    images: Annotated[
        int, typer.Option("--images", "-n", help="Number of photos.")
    ] = SAMPLE_IMAGES,
    size: Annotated[int, typer.Option("--size", "-s", help="Side of each square photo.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same bytes).")] = 0,
    num_classes: Annotated[
        int, typer.Option("--num-classes", help="How many food classes to draw from (1-103).")
    ] = 12,
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Share of photos in the test split.")
    ] = 0.25,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing dataset folder.")
    ] = False,
) -> None:
    """Generate the synthetic sample dataset in the official FoodSeg103 layout."""
    from cmi_cli.data.sample import generate_sample

    summary = generate_sample(
        out,
        images=images,
        size=size,
        seed=seed,
        test_fraction=test_fraction,
        num_food_classes=num_classes,
        overwrite=overwrite,
        show_progress=not is_quiet(),
    )
    counts = ", ".join(f"{k}: {v}" for k, v in summary.counts.items())
    info(f"[green]wrote[/green] sample dataset to {summary.root} ({counts}, {size}px)")


class ImportKind(str, Enum):
    """Datasets that ``cmi data import`` understands."""

    foodseg103 = "foodseg103"


@app.command("import", rich_help_panel="Datasets")
def import_(
    kind: Annotated[ImportKind, typer.Argument(help="Which dataset SRC holds.")],
    src: Annotated[Path, typer.Argument(help="Downloaded folder, zip, or parquet directory.")],
    name: Annotated[str, typer.Option("--name", help="Folder name under data/.")] = "foodseg103",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing data/NAME.")
    ] = False,
    password_env: Annotated[
        str,
        typer.Option("--password-env", help="Environment variable holding the zip's password."),
    ] = "CMI_ZIP_PASSWORD",
    project: ProjectOpt = None,
) -> None:
    """Bring a downloaded FoodSeg103 into the project's data folder and track it with DVC."""
    import os

    from cmi_cli.data.importer import import_foodseg103

    password = os.environ.get(password_env)
    dest = import_foodseg103(
        src, project_root=project, name=name, overwrite=overwrite, password=password
    )
    info(f"[green]imported[/green] {src} -> {dest} (tracked by DVC; run 'cmi data push')")


@app.command(rich_help_panel="Datasets")
def validate(
    root: RootArg = None,
    num_classes: Annotated[
        int | None, typer.Option("--num-classes", help="Labels must lie in [0, N).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON.")
    ] = None,
) -> None:
    """Check every image/mask pair; exit 1 when any problem is found."""
    from cmi_cli.data.validate import render_validation, validate_dataset
    from cmi_cli.paths import resolve_data_root
    from cmi_cli.utils.files import atomic_write_text

    report = validate_dataset(
        resolve_data_root(root), num_classes=num_classes, show_progress=not is_quiet()
    )
    render_validation(report, out_console())
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        raise typer.Exit(1)


@app.command(rich_help_panel="Datasets")
def stats(
    root: RootArg = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for stats.json and class_shares.png."),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Classes shown at each end.")] = 10,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.001,
            max=0.5,
            help="The data.val_fraction whose validation share of train to describe.",
        ),
    ] = 0.1,
) -> None:
    """Show images per split and each class's share of pixels; write a PNG bar chart.

    Also shows which share of train validation is carved from (chosen by a hash of names).
    """
    from cmi_cli.data.stats import compute_stats, render_stats, write_class_share_plot
    from cmi_cli.paths import DEFAULT_REPORTS_DIR, resolve_data_root
    from cmi_cli.utils.files import atomic_write_text

    data_root = resolve_data_root(root)
    result = compute_stats(data_root, show_progress=not is_quiet(), val_fraction=val_fraction)
    render_stats(result, out_console(), top=top)
    out_dir = out if out is not None else DEFAULT_REPORTS_DIR / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "stats.json", json.dumps(result.to_dict(), indent=2))
    png = write_class_share_plot(result, out_dir / "class_shares.png")
    err_console().print(f"wrote {out_dir / 'stats.json'} and {png}")


@app.command(rich_help_panel="Datasets")
def prepare(
    root: RootArg = None,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            "-s",
            min=16,
            help="Side of the cached squares. Default: data.image_size of the train config.",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Where caches live. Default: ROOT/.cache.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when an up-to-date cache exists.")
    ] = False,
) -> None:
    """Decode and resize a dataset once into a packed cache for fast loading.

    Training reads the cache instead of decoding photos when data.image_size equals --size
    (and data.cache is auto). The cache is rebuilt when the data's DVC hash or the size changes.
    """
    from cmi_cli.data.cache import prepare_cache
    from cmi_cli.paths import resolve_data_root

    data_root = resolve_data_root(root)
    if size is None:
        from cmi_cli.config import compose_train_config

        size = int(compose_train_config([], project_root=Path.cwd()).data.image_size)
    result = prepare_cache(
        data_root, size, cache_dir=cache_dir, force=force, show_progress=not is_quiet()
    )
    cache = result.cache
    splits = ", ".join(f"{k}: {v}" for k, v in cache.splits.items())
    mb = cache.nbytes / 1e6
    if result.built:
        info(
            f"[green]packed[/green] {sum(cache.splits.values())} pairs ({splits}) at "
            f"{size}x{size} into {cache.path} ({mb:.1f} MB, {result.seconds:.1f} s)"
        )
        for path in result.removed:
            info(f"removed the stale cache {path}")
    else:
        info(f"[green]up to date[/green]: {cache.path} ({splits}, {size}x{size}, {mb:.1f} MB)")
    info(f"training with data.image_size={size} reads it (data.cache: auto)")
