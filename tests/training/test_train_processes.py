"""Training across processes: resume after SIGKILL, DDP on two CPU processes, W&B offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _wandb_file import read_finished_records
from typer.testing import CliRunner

from cmi_cli.cli.app import app

TINY = ["debug=tiny", "data.limit=null", "data.image_size=32", "early_stopping.patience=0"]


def cmi(*args: str) -> list[str]:
    return [sys.executable, "-m", "cmi_cli", "-q", *args]


def history_epochs(run_dir: Path) -> list[int]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:] if line]


@pytest.mark.slow
def test_sigkill_then_resume_finishes_without_gap(tiny_project: Path) -> None:
    epochs = 12
    args = [*TINY, "data.image_size=48", "data.batch_size=2", f"trainer.max_epochs={epochs}"]
    run_dir = tiny_project / "runs" / "killed"
    proc = subprocess.Popen(
        cmi("train", *args, "run.name=killed"),
        cwd=tiny_project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while len(history_epochs(run_dir)) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = history_epochs(run_dir)
    assert 2 <= len(done_before) < epochs, "the run must be killed part-way"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    resumed = subprocess.run(
        cmi("train", *args, "run.name=killed", "--resume"),
        cwd=tiny_project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert history_epochs(run_dir) == list(range(epochs))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == epochs
    assert "resuming" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_reduces_metrics_across_ranks(tiny_project: Path) -> None:
    proc = subprocess.run(
        cmi(
            "train",
            *TINY,
            "trainer.max_epochs=2",
            "trainer.strategy=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            "run.name=ddp",
        ),
        cwd=tiny_project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = tiny_project / "runs" / "ddp"
    assert history_epochs(run_dir) == [0, 1]
    best = json.loads((run_dir / "metrics.json").read_text())["best"]
    # One process scoring the whole validation split must see what the two ranks saw together.
    ev = subprocess.run(
        cmi("evaluate", str(run_dir / "checkpoints" / "best.ckpt"), "--json", "ev.json"),
        cwd=tiny_project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ev.returncode == 0, ev.stderr
    single = json.loads((tiny_project / "ev.json").read_text())
    assert single["miou"] == pytest.approx(best["val/miou"], abs=1e-6)
    assert single["pixel_accuracy"] == pytest.approx(best["val/pixel_acc"], abs=1e-6)


def test_wandb_runs_offline_without_login_and_records_what_it_would_send(
    tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tiny_project / "home"))
    monkeypatch.setenv("NETRC", str(tiny_project / "home" / ".netrc"))
    result = CliRunner().invoke(
        app, ["train", *TINY, "trainer.max_epochs=1", "logger=wandb", "run.name=wb"]
    )
    assert result.exit_code == 0, result.output
    assert "not logged in, logging offline" in result.output
    (run_file,) = (tiny_project / "runs" / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    records = read_finished_records(run_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    config_keys = {u.key for r in records if r.HasField("config") for u in r.config.update}
    config_keys |= {u.key for r in records if r.HasField("run") for u in r.run.config.update}
    assert {"data", "model", "trainer", "optim"} <= config_keys
    history_keys = {
        i.key or "/".join(i.nested_key)
        for r in records
        if r.HasField("history")
        for i in r.history.item
    }
    assert {"val/miou", "train/loss_epoch"} <= history_keys
    assert any(k.startswith("predictions") for k in history_keys)
    artifacts = [r.artifact for r in records if r.HasField("artifact")]
    assert any(a.type == "model" for a in artifacts)
    assert "exit" in kinds
