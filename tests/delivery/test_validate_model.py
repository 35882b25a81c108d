"""The model-registry workflow's checks, run here: deploy/validate-model.sh and its gate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GATE = REPO / "deploy" / "accuracy_gate.py"


def gate(tmp_path: Path, new: dict, current: dict, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "new.json").write_text(json.dumps(new))
    (tmp_path / "current.json").write_text(json.dumps(current))
    return subprocess.run(
        [
            sys.executable,
            str(GATE),
            str(tmp_path / "new.json"),
            str(tmp_path / "current.json"),
            *args,
        ],
        capture_output=True,
        text=True,
    )


def record(miou: float, split: str = "val", n: int = 40) -> dict:
    return {"miou": miou, "split": split, "num_images": n}


def test_gate_passes_within_the_allowed_drop(tmp_path: Path) -> None:
    out = gate(tmp_path, record(0.405), record(0.41), "--max-drop", "0.01")
    assert out.returncode == 0, out.stdout
    assert "pass" in out.stdout
    assert "-0.0050" in out.stdout


def test_gate_fails_a_worse_model(tmp_path: Path) -> None:
    out = gate(tmp_path, record(0.39), record(0.41), "--max-drop", "0.01")
    assert out.returncode == 1
    assert "FAIL" in out.stdout


def test_gate_refuses_scores_of_different_splits(tmp_path: Path) -> None:
    out = gate(tmp_path, record(0.5, split="test"), record(0.41))
    assert out.returncode == 2
    assert "not comparable" in out.stdout


def test_gate_names_a_file_that_is_no_evaluation(tmp_path: Path) -> None:
    out = gate(tmp_path, {"accuracy": 1}, record(0.41))
    assert out.returncode == 1
    assert "no mIoU" in out.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_validate_model_script_runs_every_check(
    delivery_checkpoint: tuple[Path, Path], delivery_onnx: Path, tmp_path: Path
) -> None:
    ckpt, project = delivery_checkpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMI_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        PYTHON=sys.executable,
        PORT=str(_free_port()),
        SCHEMATHESIS_EXAMPLES="5",
        WANDB_MODE="disabled",
    )
    out = subprocess.run(
        ["bash", str(REPO / "deploy" / "validate-model.sh"), str(ckpt),
         str(project / "data" / "foodseg103"), str(tmp_path / "out"), str(delivery_onnx)],
        capture_output=True, text=True, env=env, cwd=project, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "accuracy gate: pass" in out.stdout
    assert "fit to deploy" in out.stdout
    assert (tmp_path / "out" / "model.onnx").is_file()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
