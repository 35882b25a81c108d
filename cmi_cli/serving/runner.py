"""Starting uvicorn: one process with a preloaded model, or several worker processes.

With one worker the model is loaded before the server starts, so a bad model is one error
line, not a traceback from inside the server. With several, each worker builds its app from
``CMI_*`` variables (:func:`cmi_cli.serving.app.create_app_from_env`) and Prometheus runs in
multiprocess mode, so ``/metrics`` adds up every worker's samples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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
            app, host=settings.host, port=settings.port, log_level=level, access_log=access_log
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
        )
    finally:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)


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
