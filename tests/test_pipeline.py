"""The dvc.yaml that `cmi init` writes runs end to end with `dvc repro`, driven by the steps of
the data-change workflow that `cmi init` writes beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _workflow import run_job

from cmi_cli.project import init_project

TINY_PARAMS = """model: fast_unet
seed: 1
trainer:
  max_epochs: 1
data:
  image_size: 32
  batch_size: 4
"""


@pytest.mark.slow
def test_dvc_repro_runs_every_stage(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    init_project(project, sample_images=12, sample_size=48, show_progress=False)
    (project / "params.yaml").write_text(TINY_PARAMS)
    # The tiny sample's test split is smaller than the drift check's default minimum.
    dvc_yaml = project / "dvc.yaml"
    dvc_yaml.write_text(
        dvc_yaml.read_text().replace("--fail-on-drift", "--fail-on-drift --min-samples 3")
    )
    # The stages call `cmi`: the one installed beside this interpreter.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "WANDB_MODE": "disabled",
    }
    env.pop("CMI_RUN_NAME", None)

    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    # The project's own CI workflow, step by step (its install step needs a released cmi-cli
    # from PyPI; this interpreter's cmi stands in for it).
    summary = tmp_path / "summary.md"
    steps = run_job(
        project / ".github" / "workflows" / "data-change.yml",
        "retrain",
        project,
        {**env, "GITHUB_STEP_SUMMARY": str(summary)},
        skip={"install"},
    )
    names = [step.name for step in steps]
    assert all(step.returncode == 0 for step in steps), steps[-1].output
    assert "Run the pipeline" in names
    report = summary.read_text()
    assert "| Path" in report
    assert "miou" in report
    lock = (project / "dvc.lock").read_text()
    for stage in (
        "validate",
        "stats",
        "prepare",
        "train",
        "evaluate",
        "export",
        "quantize",
        "benchmark",
        "drift",
    ):
        assert f"  {stage}:" in lock
    metrics = json.loads(dvc("metrics", "show", "--json").stdout)
    data = metrics[""]["data"] if "" in metrics else next(iter(metrics.values()))["data"]
    assert "best" in data["runs/pipeline/metrics.json"]["data"]
    assert "miou" in data["reports/eval.json"]["data"]
    diff = dvc("params", "diff")
    assert "trainer.max_epochs" in diff.stdout
    status = dvc("status")
    assert "changed" not in status.stdout
