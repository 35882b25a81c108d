"""The ONNX metadata contract: lineage in, lineage out, without torch on the reading side."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import pytest
from _onnx_project import TrainedProject
from onnx import TensorProto, helper

from cmi_cli.errors import ArtifactError, UsageError
from cmi_cli.export.metadata import (
    FORMAT,
    LINEAGE_KEY,
    read_lineage,
    sha256_file,
    write_lineage,
)
from cmi_cli.export.ort_predict import GRAPH_OPTIMIZATION_LEVELS, OnnxPredictor


def _identity_model() -> onnx.ModelProto:
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])],
        "g",
        [info("image", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [info("logits", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    model = _identity_model()
    lineage = {"kind": "onnx", "num_classes": 3, "model": {"name": "identity"}, "x": [1, 2]}
    write_lineage(model, lineage)
    write_lineage(model, lineage)  # writing again replaces, not duplicates
    assert [p.key for p in model.metadata_props] == [LINEAGE_KEY, "cmi_format"]
    assert model.producer_name == "cmi-cli"
    assert "identity" in model.doc_string
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert read_lineage(path) == lineage
    predictor = OnnxPredictor(path)
    assert predictor.lineage == lineage
    assert predictor.input_name == "image"


def test_lineage_of_a_model_onnx_runtime_cannot_run_is_still_read(tmp_path: Path) -> None:
    model = _identity_model()
    model.graph.node[0].op_type = "NoSuchOp"
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    write_lineage(model, {"kind": "onnx"})
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ArtifactError, match="is not a loadable ONNX model"):
        OnnxPredictor(path)
    assert read_lineage(path) == {"kind": "onnx"}


def test_export_lineage_names_its_parent_and_export(
    exported_onnx: Path, trained_project: TrainedProject
) -> None:
    import torch

    lineage = read_lineage(exported_onnx)
    ckpt = torch.load(trained_project.ckpt, map_location="cpu", weights_only=True)["cmi_lineage"]
    assert lineage["kind"] == "onnx"
    for key in ("class_names", "num_classes", "preprocessing", "model", "config", "data"):
        assert lineage[key] == ckpt[key], key
    assert lineage["metrics"] == ckpt["metrics"]
    assert lineage["parent"]["kind"] == "checkpoint"
    assert lineage["parent"]["sha256"] == sha256_file(trained_project.ckpt)
    assert lineage["code"]["package"].startswith("cmi-cli ")
    export = lineage["export"]
    assert export["exporter"] == "torchscript"
    assert export["opset"] == 17
    assert export["torch"] == metadata.version("torch")  # one version string in every record
    assert export["dynamic_axes"]["image"] == {"0": "batch", "2": "height", "3": "width"}
    meta = {p.key: p.value for p in onnx.load(str(exported_onnx)).metadata_props}
    assert meta["cmi_format"] == FORMAT
    assert json.loads(meta[LINEAGE_KEY]) == lineage


def test_reading_and_predicting_import_no_torch(exported_onnx: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from cmi_cli.export.metadata import read_lineage\n"
        "from cmi_cli.export.ort_predict import OnnxPredictor\n"
        f"path = {str(exported_onnx)!r}\n"
        "assert read_lineage(path)['kind'] == 'onnx'\n"
        "out = OnnxPredictor(path).predict(np.zeros((1, 3, 20, 20), np.float32))\n"
        "assert out.shape == (1, 104, 20, 20)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "ONNX model not found"),
        (b"hello, not onnx\n", "is not an ONNX model or is truncated"),
        ("truncated", "is not an ONNX model or is truncated"),
        ("no-lineage", "has no cmi lineage metadata"),
    ],
)
def test_bad_files_are_one_line_artifact_errors(
    tmp_path: Path, exported_onnx: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "x.onnx"
    if content == "truncated":
        data = exported_onnx.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif content == "no-lineage":
        onnx.save(_identity_model(), str(path))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ArtifactError, match=message) as info:
        read_lineage(path)
    assert "\n" not in info.value.one_line()
    with pytest.raises(ArtifactError):
        OnnxPredictor(path)


def test_predictor_options_give_the_same_logits(exported_onnx: Path) -> None:
    batch = np.random.default_rng(0).standard_normal((2, 3, 24, 40), dtype=np.float32)
    reference = OnnxPredictor(exported_onnx, graph_optimization_level="disable").predict(batch)
    for level in GRAPH_OPTIMIZATION_LEVELS:
        predictor = OnnxPredictor(exported_onnx, threads=1, graph_optimization_level=level)
        np.testing.assert_allclose(predictor(batch), reference, atol=1e-5)
    assert OnnxPredictor(exported_onnx).class_names[0] == "background"
    with pytest.raises(UsageError, match="unknown graph optimisation level"):
        OnnxPredictor(exported_onnx, graph_optimization_level="max")
    with pytest.raises(UsageError, match="threads must be >= 1"):
        OnnxPredictor(exported_onnx, threads=0)
    with pytest.raises(UsageError, match=r"expected a batch of shape \[N, 3, H, W\]"):
        OnnxPredictor(exported_onnx).predict(np.zeros((3, 24, 40), np.float32))
