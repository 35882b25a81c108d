"""Starting uvicorn: one process with a preloaded model, or several worker processes.

With one worker the model is loaded before the server starts, so a bad model is one error
line, not a traceback from inside the server. With several, each worker builds its app from
``CMI_*`` variables (:func:`cmi_cli.serving.app.create_app_from_env`) and Prometheus runs in
multiprocess mode, so ``/metrics`` adds up every worker's samples.

Either way uvicorn runs our protocol class (:mod:`cmi_cli.serving.protocol`: header timeout
and size limit, connection cap, JSON 400s), closes idle keep-alive connections after
``keep_alive_s``, and on SIGTERM/SIGINT stops accepting, lets in-flight requests finish for
up to ``shutdown_grace_s`` seconds, cancels what is left, then flushes the prediction log and
exits (uvicorn re-raises the signal, so the exit status is the signal's: 143 / -15 for
SIGTERM, 130 / -2 for SIGINT).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cmi_cli.console import info, is_quiet, is_verbose
from cmi_cli.errors import ArtifactError
from cmi_cli.serving.settings import ServeSettings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def check_model(settings: ServeSettings) -> str:
    """Fail early, in one line, on a model the workers could not load; return its name."""
    path = settings.model
    if not path.is_file():
        raise ArtifactError(f"model not found: {path}", hint="Pass a .onnx or .ckpt file")
    if settings.resolved_backend == "onnx":
        from cmi_cli.export.metadata import read_lineage

        return str(read_lineage(path).get("model", {}).get("name", path.stem))
    return path.stem


def run_server(settings: ServeSettings, access_log: bool = True) -> None:
    """Serve until interrupted.

    Raises:
        ArtifactError: If the model is missing or cannot be loaded.
    """
    import uvicorn

    level = "debug" if is_verbose() else "warning" if is_quiet() else "info"
    url = f"http://{settings.host}:{settings.port}"
    limits = _server_limits(settings)
    if settings.workers == 1:
        from cmi_cli.serving.app import create_app
        from cmi_cli.serving.predictor import ServedModel

        served = ServedModel.load(
            settings.model, settings.resolved_backend, settings.session_threads
        )
        info(f"serving [bold]{served.id}[/bold] ({served.backend_name}) at {url}")
        info(f"page {url}/  API docs {url}/docs  metrics {url}/metrics")
        app = create_app(settings, served=served)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=level,
            access_log=access_log,
            **limits,
        )
        return
    name = check_model(settings)
    info(f"serving {name} with {settings.workers} workers at {url}")
    os.environ.update(settings.to_env())
    owned = _multiproc_dir()
    try:
        uvicorn.run(
            "cmi_cli.serving.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=level,
            access_log=access_log,
            **limits,
        )
    finally:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)


def _server_limits(settings: ServeSettings) -> dict[str, Any]:
    """Uvicorn's options for the slow-client limits and the shutdown grace period."""
    from cmi_cli.serving import protocol

    protocol.configure(
        settings.header_timeout_s,
        settings.max_header_bytes,
        settings.max_connections,
        settings.retry_after_s,
    )
    return {
        "http": protocol.IMPORT_STRING,
        "timeout_keep_alive": settings.keep_alive_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
    }


def _multiproc_dir() -> Path | None:
    """Point Prometheus at an empty folder shared by the workers; return it if we made it."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # samples of a previous run would be added up
            stale.unlink()
        return None
    folder = Path(tempfile.mkdtemp(prefix="cmi-prometheus-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder
