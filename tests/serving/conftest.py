"""Fixtures for the serving tests: a real exported model, sample photos, a live `cmi serve`."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _serve_helpers import LiveServer, ServeModels, start_server


@pytest.fixture(scope="session")
def serve_models(tmp_path_factory: pytest.TempPathFactory, tiny_sample_master: Path) -> ServeModels:
    """Train `debug=tiny` (32 px) for one epoch and export it, once per session (read-only)."""
    from cmi_cli.config import compose_train_config
    from cmi_cli.export.onnx_export import export_onnx
    from cmi_cli.training.train import train

    root = tmp_path_factory.mktemp("serve_project")
    shutil.copytree(tiny_sample_master, root / "data" / "foodseg103")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("WANDB_MODE", "disabled")
        mp.delenv("CMI_RUN_NAME", raising=False)
        overrides = ["debug=tiny", "run.name=s", "optim.warmup_epochs=0"]
        cfg = compose_train_config(overrides, project_root=root)
        ckpt = train(cfg, project_root=root, show_progress=False).best_ckpt
        assert ckpt is not None
        onnx_path = export_onnx(ckpt, num_images=1).path
    return ServeModels(root, ckpt, onnx_path)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Factory of live servers, all stopped after the test."""
    started: list[LiveServer] = []

    def start(model: Path | None, args: list[str] | None = None, **env: str) -> LiveServer:
        server = start_server(model, tmp_path, args, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
