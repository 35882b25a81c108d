"""``cmi serve``: the HTTP API, web page, metrics and prediction log for a model."""

from pathlib import Path
from typing import Annotated

import typer

PANEL = "Serve & monitor"


def serve_cmd(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="An ONNX model (served with ONNX Runtime, no torch) or a .ckpt (torch). "
            "Default: $CMI_MODEL.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind. (default: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind. (default: 8000)")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Server processes. (default: 1)")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="onnx or torch. (default: torch for .ckpt, else onnx)"),
    ] = None,
    max_upload_mb: Annotated[
        float | None, typer.Option(help="Largest request body in MB. (default: 20)")
    ] = None,
    max_pixels: Annotated[
        int | None, typer.Option(help="Largest image in pixels. (default: 40000000)")
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="Name of an environment variable holding the API key; /v1 routes then need it."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Inference threads per worker. (default: cores / workers)"),
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Images processed at once per worker.")
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            min=0, help="Requests that may wait; beyond, 503 + Retry-After. (default: 64)"
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Micro-batch concurrent requests up to this size (1: off)."),
    ] = None,
    batch_wait_ms: Annotated[
        float | None, typer.Option(min=0, help="Longest wait to fill a micro-batch. (default: 5)")
    ] = None,
    log_dir: Annotated[
        str | None,
        typer.Option(help="Prediction log folder or gs://bucket/prefix. (default: predictions)"),
    ] = None,
    log_predictions: Annotated[
        bool | None, typer.Option("--log/--no-log", help="Keep the prediction log. (default: on)")
    ] = None,
    nutrition_table: Annotated[
        Path | None,
        typer.Option(help="Nutrition table CSV for ?nutrition=true. (default: the packaged one)"),
    ] = None,
    plate_diameter_cm: Annotated[
        float | None,
        typer.Option(help="Plate diameter (cm) when a request gives none. (default: 26)"),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log each request.")
    ] = True,
) -> None:
    """Serve a model over HTTP: /v1/segment, /v1/model, the page at /, /metrics, /readyz.

    Every option can also be set with a CMI_* environment variable (CMI_MODEL, CMI_PORT,
    CMI_WORKERS, CMI_API_KEY_ENV, CMI_LOG_DIR ...), so a container needs no arguments.
    """
    from cmi_cli.serving.settings import load_settings

    settings = load_settings(
        model=model,
        host=host,
        port=port,
        workers=workers,
        backend=backend,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        api_key_env=api_key_env,
        threads=threads,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        log_dir=log_dir,
        log_predictions=log_predictions,
        nutrition_table=nutrition_table,
        plate_diameter_cm=plate_diameter_cm,
    )
    if settings.nutrition_table is not None:  # every worker would fail on it: say it once
        from cmi_cli.nutrition import load_nutrition_table

        load_nutrition_table(settings.nutrition_table)
    from cmi_cli.serving.runner import run_server

    run_server(settings, access_log=access_log)


def register(app: typer.Typer) -> None:
    """Register ``cmi serve`` on the root application."""
    app.command("serve", rich_help_panel=PANEL)(serve_cmd)
