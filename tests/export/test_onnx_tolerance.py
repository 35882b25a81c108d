"""ONNX validation tolerates float32 rounding in proportion to the logits, and nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cmi_cli.export.errors import AtolError
from cmi_cli.export.onnx_export import DEFAULT_OPSET, _trace_to_onnx
from cmi_cli.export.validate_onnx import validate_onnx

SIZE = 32


@pytest.fixture(scope="module")
def large_logit_unet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A MiniUNet (no batch norm) whose logits are in the thousands, and its ONNX export."""
    import torch

    from cmi_cli.models import build_model

    torch.manual_seed(0)
    model = build_model("mini_unet", num_classes=5).eval()
    # Trained networks reach large logits; scale the head so float32 rounding, which grows
    # with the magnitude, is about 1e-4 in absolute terms.
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.weight.mul_(3e4)
    path = tmp_path_factory.mktemp("tolerance") / "mini.onnx"
    _trace_to_onnx(model, path, opset=DEFAULT_OPSET, dynamic=True, height=SIZE, width=SIZE)
    import onnx

    from cmi_cli.export.metadata import write_lineage

    proto = onnx.load(str(path))
    write_lineage(proto, {"kind": "onnx", "model": {"name": "mini_unet"}, **LINEAGE})
    onnx.save(proto, str(path))
    return model, path


LINEAGE: dict[str, Any] = {
    "num_classes": 5,
    "class_names": [f"c{i}" for i in range(5)],
    "preprocessing": {"image_size": SIZE, "mean": [0.5] * 3, "std": [0.25] * 3},
}


def test_large_logits_pass_with_a_relative_tolerance(large_logit_unet: tuple[Any, Path]) -> None:
    model, path = large_logit_unet
    report = validate_onnx(path, model, LINEAGE, num_images=2)
    assert report.ok, [c.detail for c in report.checks]
    assert report.max_tolerance_ratio is not None
    assert report.max_tolerance_ratio <= 1
    assert report.argmax_agreement is not None
    assert report.argmax_agreement >= 0.999
    recorded = report.to_dict()
    assert (recorded["atol"], recorded["rtol"], recorded["min_argmax_agreement"]) == (
        1e-4,
        1e-4,
        0.999,
    )
    # The same logits judged by a fixed atol alone fail: the check above is not vacuous.
    strict = validate_onnx(path, model, LINEAGE, num_images=2, rtol=0.0)
    assert any(isinstance(e, AtolError) for e in strict.failures)


def test_a_changed_weight_still_fails(large_logit_unet: tuple[Any, Path], tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model, path = large_logit_unet
    proto = onnx.load(str(path))
    # The head's weights for class 0, 1% larger: a small fault, far above float rounding.
    (index,) = [
        i
        for i, t in enumerate(proto.graph.initializer)
        if list(t.dims[:1]) == [5] and len(t.dims) == 4
    ]
    init = proto.graph.initializer[index]
    weights = numpy_helper.to_array(init).copy()
    weights[0] *= 1.01
    proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights, init.name))
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(proto, str(corrupted))
    report = validate_onnx(corrupted, model, LINEAGE, num_images=2)
    assert not report.ok
    assert any(isinstance(e, AtolError) for e in report.failures)
    assert report.max_tolerance_ratio is not None
    assert report.max_tolerance_ratio > 1
