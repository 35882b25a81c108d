"""The records of one run: each artifact's own checks, one set of versions, the project's commit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from _onnx_project import TrainedProject

from cmi_cli.export.metadata import read_lineage
from cmi_cli.export.onnx_export import export_onnx
from cmi_cli.export.quantize import QuantizeSettings, quantize_onnx
from cmi_cli.lineage import code_version, library_versions
from cmi_cli.training.checkpoint import load_checkpoint


def _git_project(root: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    (root / "params.yaml").write_text("seed: 0\n")
    git("add", "params.yaml")
    git("commit", "-q", "-m", "init")
    return git("rev-parse", "HEAD")


@pytest.fixture(scope="module")
def records(
    trained_project: TrainedProject, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict]:
    """Checkpoint, ONNX and int8 records made in a git project, run from outside it."""
    project = tmp_path_factory.mktemp("git_project")
    commit = _git_project(project)
    shutil.copytree(trained_project.root / "data", project / "data")
    ckpt = Path(shutil.copy(trained_project.ckpt, project / "best.ckpt"))
    outside = tmp_path_factory.mktemp("elsewhere")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(outside)
        onnx_path = export_onnx(ckpt, project / "model.onnx", data_root=project / "data/foodseg103")
        int8 = quantize_onnx(
            onnx_path.path,
            settings=QuantizeSettings(calib_size=4),
            calib_data=project / "data/foodseg103",
            max_miou_drop=1.0,
        )
    return {
        "commit": {"sha": commit},
        "checkpoint": load_checkpoint(trained_project.ckpt)["cmi_lineage"],
        "onnx": read_lineage(onnx_path.path),
        "int8": read_lineage(int8.path),
    }


def test_exports_record_the_projects_commit_wherever_they_run(records: dict) -> None:
    sha = records["commit"]["sha"]
    assert records["onnx"]["code"]["git_commit"] == sha
    assert records["int8"]["code"]["git_commit"] == sha


def test_every_record_names_the_same_versions(records: dict) -> None:
    torch_version = library_versions()["torch"]
    assert torch_version
    for kind in ("checkpoint", "onnx", "int8"):
        assert records[kind]["code"]["torch"] == torch_version, kind
        assert records[kind]["code"]["package"] == records["onnx"]["code"]["package"]
    assert records["onnx"]["export"]["torch"] == torch_version
    assert records["int8"]["quantization"]["onnxruntime"] == library_versions()["onnxruntime"]


def test_the_int8_record_holds_its_own_checks_not_its_parents(records: dict) -> None:
    onnx_checks = records["onnx"]["export"]["validation"]["checks"]
    assert "onnx_checker" not in onnx_checks  # the fp32 export's checklist is another one
    int8 = records["int8"]
    assert "export" not in int8  # the fp32 export's facts stay in the fp32 record
    own = int8["validation"]
    assert set(own["checks"]) == {"onnx_checker", "input_output_names", "miou_drop"}
    assert all(status == "pass" for status in own["checks"].values())
    delta = int8["quantization"]["delta"]
    assert own["miou_drop"] == pytest.approx(delta["miou_drop"])
    assert own["pixel_agreement"] == pytest.approx(delta["pixel_agreement"])
    assert int8["metrics"]["val/miou"] == pytest.approx(delta["miou_int8"], abs=1e-6)


def test_code_version_outside_a_repository_says_so(tmp_path: Path) -> None:
    code = code_version(tmp_path)
    assert code["git_commit"] is None
    assert code["git_dirty"] is None
    assert code["package"].startswith("cmi-cli ")
