"""SIGTERM and SIGINT sent to a real `cmi train`: a resumable checkpoint, the run so far kept,
a non-zero exit (128 + signal), and a resume without a gap or a duplicated epoch."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = ["debug=tiny", "data.limit=null", "data.image_size=32", "data.batch_size=2"]
ARGS = [*TINY, "early_stopping.patience=0", "logger=csv", "trainer.max_epochs=3"]


def cmi(*args: str) -> list[str]:
    return [sys.executable, "-m", "cmi_cli", "-q", *args]


def history_epochs(run_dir: Path) -> list[int]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:] if line]


def metrics_csv_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "logs" / "metrics.csv").open(newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/miou")]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_resumable_run_and_resume_has_no_gap(
    tiny_project: Path, signum: int, code: int
) -> None:
    run_dir = tiny_project / "runs" / "sig"
    proc = subprocess.Popen(
        cmi("train", *ARGS, "run.name=sig"),
        cwd=tiny_project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while len(history_epochs(run_dir)) < 1 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere inside the next epoch
    os.kill(proc.pid, signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "run.name=sig --resume" in stderr
    assert signal.Signals(signum).name in stderr

    done = history_epochs(run_dir)
    assert done == list(range(len(done)))
    assert 1 <= len(done) < 3
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # The checkpoint is as recent as the stop: at least every finished epoch's steps.
    with (run_dir / "history.csv").open(newline="") as f:
        last_row = list(csv.DictReader(f))[-1]
    assert ckpt["global_step"] >= int(last_row["step"])
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["epochs_run"] == len(done)
    assert metrics_csv_epochs(run_dir) == done

    resumed = subprocess.run(
        cmi("train", "run.name=sig", "--resume"),
        cwd=tiny_project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert history_epochs(run_dir) == [0, 1, 2]
    assert metrics_csv_epochs(run_dir) == [0, 1, 2]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 3
