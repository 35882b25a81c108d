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
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback

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


class SignalAt(Callback):
    """Send the process a signal from inside one Lightning hook, at one epoch and batch."""

    def __init__(self, hook: str, epoch: int, batch: int, signum: int) -> None:
        self.hook, self.epoch, self.batch, self.signum = hook, epoch, batch, signum
        self.sent = False

    def _maybe_send(self, hook: str, trainer: Any, batch_idx: int = 0) -> None:
        if (
            hook == self.hook
            and not self.sent
            and not trainer.sanity_checking
            and trainer.current_epoch == self.epoch
            and (self.batch < 0 or batch_idx == self.batch)
        ):
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer: Any, *args: Any, batch_idx: int = 0, **kw: Any) -> None:
        self._maybe_send("on_train_batch_end", trainer, args[-1] if args else batch_idx)

    def on_validation_batch_end(self, trainer: Any, *args: Any, **kw: Any) -> None:
        self._maybe_send("on_validation_batch_end", trainer, args[3] if len(args) > 3 else 0)

    def on_validation_end(self, trainer: Any, *args: Any) -> None:
        self._maybe_send("on_validation_end", trainer)

    def on_train_epoch_end(self, trainer: Any, *args: Any) -> None:
        self._maybe_send("on_train_epoch_end", trainer)


def last_train_batch(project: Path) -> int:
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.train import build_data

    cfg = compose_train_config(ARGS, project_root=project)
    dm = build_data(cfg, project)
    dm.setup("fit")
    return len(dm.train_dataloader()) - 1


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize(
    ("hook", "batch"),
    [
        ("on_train_batch_end", 0),
        ("on_train_batch_end", -1),  # the epoch's last training batch, before validation
        ("on_validation_batch_end", 0),  # mid-validation
        ("on_validation_end", -1),
        ("on_train_epoch_end", -1),
    ],
)
def test_a_stop_anywhere_in_an_epoch_resumes_with_every_epoch_validated_once(
    tiny_project: Path, hook: str, batch: int, signum: int
) -> None:
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.interrupt import TrainingInterrupted
    from cmi_cli.training.resume import resume_cli_config
    from cmi_cli.training.train import train

    if hook == "on_train_batch_end" and batch < 0:
        batch = last_train_batch(tiny_project)
    trigger = SignalAt(hook, 1, batch, signum)
    cfg = compose_train_config([*ARGS, "run.name=sig"], project_root=tiny_project)
    with pytest.raises(TrainingInterrupted):
        train(cfg, project_root=tiny_project, show_progress=False, extra_callbacks=[trigger])
    assert trigger.sent
    run_dir = tiny_project / "runs" / "sig"
    done = history_epochs(run_dir)
    assert metrics_csv_epochs(run_dir) == done

    cfg = resume_cli_config(["run.name=sig"], None, tiny_project)
    train(cfg, project_root=tiny_project, resume=True, show_progress=False)
    assert history_epochs(run_dir) == [0, 1, 2]
    assert metrics_csv_epochs(run_dir) == [0, 1, 2]
    with (run_dir / "history.csv").open(newline="") as f:
        assert all(row["val/miou"] for row in csv.DictReader(f))
