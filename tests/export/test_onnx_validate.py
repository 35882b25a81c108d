"""The validation step on its own: each broken promise is caught with its own error type."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import onnx
import pytest
from _onnx_project import TrainedProject

from cmi_cli.export.errors import (
    CheckerError,
    DynamicAxesError,
    OnnxValidationError,
    OutputNameError,
    ShapeError,
)
from cmi_cli.export.validate_onnx import ValidationReport, render_report, validate_onnx

ModelAndLineage = tuple[Any, dict[str, Any]]


@pytest.fixture(scope="module")
def model_and_lineage(trained_project: TrainedProject) -> ModelAndLineage:
    from cmi_cli.training.checkpoint import load_model

    return load_model(trained_project.ckpt)


def _failure_types(report: ValidationReport) -> set[type]:
    return {type(e) for e in report.failures}


def test_a_good_export_passes_every_check(
    exported_onnx: Path, in_project: Path, model_and_lineage: ModelAndLineage
) -> None:
    model, lineage = model_and_lineage
    report = validate_onnx(exported_onnx, model, lineage)
    assert report.ok, [c.detail for c in report.checks]
    assert report.max_abs_diff is not None
    assert report.max_abs_diff <= 1e-4
    assert report.argmax_agreement is not None
    assert report.argmax_agreement >= 0.999
    report.raise_if_failed()


def test_static_graph_fails_the_dynamic_checks(
    static_onnx: Path, in_project: Path, model_and_lineage: ModelAndLineage
) -> None:
    model, lineage = model_and_lineage
    report = validate_onnx(static_onnx, model, lineage, dynamic=True, height=40, width=24)
    assert _failure_types(report) == {DynamicAxesError}
    # the 4-image batch, batch 2 and 67x45 are all refused by the fixed [1, 3, 40, 24] input
    assert [c.name for c in report.checks if c.status == "fail"] == [
        "graph axes",
        "logits vs PyTorch",
        "dynamic batch 2",
        "dynamic size 67x45",
    ]


def test_renamed_output_and_wrong_class_count(
    tmp_path: Path, exported_onnx: Path, in_project: Path, model_and_lineage: ModelAndLineage
) -> None:
    model, lineage = model_and_lineage
    proto = onnx.load(str(exported_onnx))
    for node in proto.graph.node:
        node.output[:] = ["scores" if o == "logits" else o for o in node.output]
    proto.graph.output[0].name = "scores"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(proto, str(renamed))
    report = validate_onnx(renamed, model, lineage)
    # OnnxPredictor refuses a model outside the contract, so ORT-based checks cannot run
    assert _failure_types(report) == {CheckerError}
    assert "expected 'image' -> 'logits'" in report.failures[0].message

    wrong = copy.deepcopy(lineage)
    wrong["num_classes"] = 5
    report = validate_onnx(exported_onnx, model, wrong)
    assert ShapeError in _failure_types(report)
    assert "expected 3 -> 5 channels" in report.failures[0].message


def test_names_check_is_its_own_error(
    exported_onnx: Path,
    in_project: Path,
    model_and_lineage: ModelAndLineage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cmi_cli.export import validate_onnx as module

    monkeypatch.setattr(module, "OUTPUT_NAME", "probabilities")
    model, lineage = model_and_lineage
    report = module.validate_onnx(exported_onnx, model, lineage)
    assert OutputNameError in _failure_types(report)


def test_an_invalid_model_is_a_checker_error_and_the_rest_is_skipped(
    tmp_path: Path,
    exported_onnx: Path,
    in_project: Path,
    model_and_lineage: ModelAndLineage,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, lineage = model_and_lineage
    proto = onnx.load(str(exported_onnx))
    proto.graph.node[0].input[0] = "no_such_tensor"
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    report = validate_onnx(broken, model, lineage)
    assert _failure_types(report) == {CheckerError}
    assert len(report.failures) == 2  # onnx.checker and ONNX Runtime both refuse it
    assert {c.status for c in report.checks} == {"fail", "skip"}
    with pytest.raises(OnnxValidationError, match=r"ONNX validation failed \(2 of 5 checks\)"):
        report.raise_if_failed()
    from rich.console import Console

    console = Console(width=200)
    render_report(report, console)
    out = capsys.readouterr().out
    assert "✗ onnx.checker" in " ".join(out.split())
    assert "- names" in " ".join(out.split())
