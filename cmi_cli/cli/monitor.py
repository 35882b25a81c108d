"""``cmi drift-check``: compare current inputs and predictions with the model's reference."""

import os
from pathlib import Path
from typing import Annotated

import typer

PANEL = "Serve & monitor"


def drift_check_cmd(
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            "-r",
            help="A reference.csv, a model (.ckpt, .onnx or run folder: its saved reference) "
            "or a dataset folder. Default: the newest runs/*/reference.csv.",
            show_default=False,
        ),
    ] = None,
    current: Annotated[
        str,
        typer.Option(
            "--current",
            "-c",
            help="A prediction log folder (cmi serve --log-dir), *.jsonl log files, a feature "
            "CSV, a dataset folder, or a server URL (http://host:port).",
        ),
    ] = "predictions",
    window: Annotated[
        int | None,
        typer.Option("--window", "-n", min=1, help="Only the last N samples.", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Only log records since a time (ISO 8601) or an age (30m, 2h, 7d)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Report folder. Default: reports/drift/<timestamp>/."),
    ] = None,
    fail_on_drift: Annotated[
        bool,
        typer.Option("--fail-on-drift", help="Exit 1 when the drifted share exceeds --threshold."),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="Share of drifted features above which the data drifts. (default: 0.2)",
        ),
    ] = None,
    min_samples: Annotated[
        int, typer.Option("--min-samples", min=2, help="Fewest current samples to judge.")
    ] = 30,
    split: Annotated[
        str | None, typer.Option("--split", help="Split of a dataset folder. Default: validation.")
    ] = None,
    api_key_env: Annotated[
        str,
        typer.Option(help="Environment variable with the API key of a server URL."),
    ] = "CMI_API_KEY",
) -> None:
    """Compare current data with the model's reference using Evidently's data-drift tests.

    Writes report.html (Evidently), evidently.json and report.json, prints each feature's test,
    score and verdict. Exit status: 0 no drift (or drift without --fail-on-drift), 1 drift with
    --fail-on-drift, 2 the check could not run (too few samples, empty or malformed log).
    """
    from cmi_cli.console import info, out_console
    from cmi_cli.monitoring.drift import render_drift
    from cmi_cli.monitoring.sources import drift_check, parse_since

    when = parse_since(since) if since else None
    result, paths = drift_check(
        reference,
        current,
        window=window,
        since=when,
        threshold=threshold,
        min_samples=min_samples,
        out_dir=out,
        split=split,
        api_key=os.environ.get(api_key_env) or None,
    )
    render_drift(result, out_console())
    folder = next(iter(paths.values())).parent
    info(f"wrote {', '.join(p.name for p in paths.values())} to {folder}")
    if fail_on_drift and result.drifted:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Register ``drift-check`` on the root application."""
    app.command("drift-check", rich_help_panel=PANEL)(drift_check_cmd)
