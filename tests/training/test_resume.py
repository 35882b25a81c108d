"""`cmi train --resume`: the run's own config, its whole metrics log, and no unsafe loading."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning.pytorch  # noqa: F401 - its log handler must bind to pytest's stderr, not a runner's
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cmi_cli.cli.app import app

runner = CliRunner()
# Settings the resumed run must take from its saved config.yaml, not from the defaults.
FIRST = [
    "debug=tiny",
    "data.limit=null",
    "data.image_size=32",
    "model.params.width=8",
    "early_stopping.patience=0",
    "trainer.max_epochs=1",
]


def metrics_epochs(run_dir: Path) -> list[int]:
    """Epochs of the rows that carry validation metrics in logs/metrics.csv."""
    with (run_dir / "logs" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [int(r["epoch"]) for r in rows if r.get("val/miou")]


def train_first(name: str, *extra: str) -> Path:
    result = runner.invoke(app, ["train", *FIRST, "logger=csv", f"run.name={name}", *extra])
    assert result.exit_code == 0, result.output
    return Path.cwd() / "runs" / name


def test_resume_continues_the_saved_config_and_keeps_every_metrics_row(
    tiny_project: Path,
) -> None:
    run_dir = train_first("cont")
    assert metrics_epochs(run_dir) == [0]
    # Only the new epoch budget is given: the model, data and logger come from config.yaml.
    result = runner.invoke(app, ["train", "run.name=cont", "trainer.max_epochs=2", "--resume"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["params"]["width"] == 8
    assert saved["data"]["image_size"] == 32
    assert saved["trainer"]["max_epochs"] == 2
    (entry,) = saved["run"]["resumes"]
    assert entry["overrides"] == ["trainer.max_epochs=2"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["cmi_lineage"]["config"]["run"]["resumes"][0]["overrides"] == [
        "trainer.max_epochs=2"
    ]
    assert ckpt["cmi_lineage"]["model"]["params"]["width"] == 8
    # Fault 3: the first run's rows survive the resume, each epoch once.
    assert metrics_epochs(run_dir) == [0, 1]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.params.width=16", "model.params.width"),
        ("data.image_size=48", "data.image_size"),
        ("model=mini_unet", "model.name"),
        ("debug=overfit", "data."),
        ("optim.name=sgd", "optim.name"),
    ],
)
def test_resume_refuses_a_change_it_cannot_honour(
    tiny_project: Path, override: str, key: str
) -> None:
    run_dir = train_first("fixed")
    before = (run_dir / "config.yaml").read_text()
    result = runner.invoke(
        app, ["train", "run.name=fixed", override, "--resume"], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert key in result.output
    assert "resum" in result.output
    assert (run_dir / "config.yaml").read_text() == before


class _Payload:
    """Unpickling this creates the marker file: what a crafted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _craft_checkpoint(path: Path, marker: Path) -> None:
    with path.open("wb") as f:
        torch.save({"state_dict": {}, "cmi_lineage": {}, "evil": _Payload(marker)}, f)
    # Sanity: the payload really runs when the file is loaded without weights_only.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


def test_crafted_checkpoint_never_runs_its_payload(
    tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = train_first("evil")
    # torch before 2.6 loaded with weights_only=False unless told otherwise: this makes the
    # installed torch do the same wherever a caller leaves weights_only unset.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tiny_project / "pwned"
    last = run_dir / "checkpoints" / "last.ckpt"
    _craft_checkpoint(last, marker)
    commands = [
        ["train", "run.name=evil", "--resume"],
        ["info", str(last)],
        ["evaluate", str(last)],
        ["export", "onnx", str(last)],
    ]
    for args in commands:
        result = runner.invoke(app, args, env={"COLUMNS": "300"})
        assert result.exit_code != 0, (args, result.output)
        assert not marker.exists(), f"cmi {' '.join(args)} ran the checkpoint's payload"
        assert "Traceback" not in result.output
        assert "checkpoint" in result.output, (args, result.output)
