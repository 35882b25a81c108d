"""Progress through a pipe (CI, ``> log``, Cloud Run, Vertex): plain lines, no control codes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from cmi_cli.console import is_interactive
from cmi_cli.training.progress import PlainProgressBar, progress_callback

TINY = ["debug=tiny", "data.limit=null", "data.image_size=32", "trainer.max_epochs=2"]


def test_cmi_train_through_a_pipe_prints_plain_periodic_lines(tiny_project: Path) -> None:
    env = {
        **os.environ,
        # What CI runners set: rich would then draw live bars into the pipe.
        "FORCE_COLOR": "1",
        "TERM": "xterm-256color",
        "COLUMNS": "100",
        "CMI_PROGRESS_INTERVAL": "0",
        "WANDB_MODE": "disabled",
    }
    env.pop("CMI_PROGRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "cmi_cli", "train", *TINY, "run.name=piped"],
        cwd=tiny_project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        timeout=600,
    )
    out = done.stdout.decode("utf-8")
    assert done.returncode == 0, out
    assert "\x1b" not in out, "escape sequences in piped output"
    assert "\r" not in out, "carriage-return redraws in piped output"
    epochs = re.findall(r"^\[ *[\d.]+s\] epoch (\d)/2 done: .*train/loss", out, re.MULTILINE)
    assert epochs == ["1", "2"], out
    assert re.search(r"^\[ *[\d.]+s\] epoch 1/2 step 1/\d+", out, re.MULTILINE), out


def test_the_progress_style_follows_the_stream(monkeypatch) -> None:
    monkeypatch.delenv("CMI_PROGRESS", raising=False)
    assert not is_interactive(io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_callback(), PlainProgressBar)
    monkeypatch.setenv("CMI_PROGRESS", "live")
    assert type(progress_callback()).__name__ == "RichProgressBar"
    monkeypatch.setenv("CMI_PROGRESS", "plain")
    assert not is_interactive(sys.__stdin__)


def test_plain_lines_are_throttled_and_silent_when_disabled() -> None:
    stream = io.StringIO()
    bar = PlainProgressBar(interval_s=3600, stream=stream)
    trainer = SimpleNamespace(
        max_epochs=3, current_epoch=0, progress_bar_metrics={}, num_training_batches=5
    )
    bar.get_metrics = lambda trainer, module: {"train/loss": 1.5}  # type: ignore[method-assign]
    bar._trainer = trainer  # the property Lightning sets on setup
    for i in range(5):
        bar.on_train_batch_end(trainer, None, None, None, i)
    bar.on_train_epoch_end(trainer, None)
    bar.disable()
    bar.on_train_epoch_end(trainer, None)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # one step line per hour at most, one line per epoch
    assert lines[1].endswith("epoch 1/3 done: train/loss 1.5")
