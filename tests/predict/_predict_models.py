"""Tiny hand-made ONNX models with cmi lineage, whose predictions are known in advance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASS_NAMES = ["background", "red", "green"]
# Inputs are x/255 (mean 0, std 1): a 1x1 convolution makes red pixels class 1, green class 2,
# anything dark background; logits of a pure pixel are (0, 4, -12), (0, -12, 4), (0, -4, -4).
WEIGHTS = np.array([[0, 0, 0], [8, -8, -8], [-8, 8, -8]], dtype=np.float32)
BIAS = np.array([0, -4, -4], dtype=np.float32)


def colour_model(path: Path, size: int = 32, batch: int | str = "n") -> Path:
    """Write a 1x1-conv ONNX model at ``path`` with a lineage ``cmi predict`` accepts."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cmi_cli.export.metadata import write_lineage

    w = numpy_helper.from_array(WEIGHTS.reshape(3, 3, 1, 1), "w")
    b = numpy_helper.from_array(BIAS, "b")
    node = helper.make_node("Conv", ["image", "w", "b"], ["logits"])
    graph = helper.make_graph(
        [node],
        "colour",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3, "h", "w"])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_lineage(
        model,
        {
            "kind": "onnx",
            "model": {"name": "colour"},
            "num_classes": 3,
            "class_names": CLASS_NAMES,
            "preprocessing": {"image_size": size, "mean": [0, 0, 0], "std": [1, 1, 1]},
        },
    )
    onnx.save(model, str(path))
    return path


def softmax_top(logits: list[float]) -> float:
    """The max softmax probability of a logit vector."""
    e = np.exp(np.asarray(logits) - max(logits))
    return float(e.max() / e.sum())


def quadrant_photo(size: int = 32) -> np.ndarray:
    """Left half red, top-right quadrant green, bottom-right black."""
    rgb = np.zeros((size, size, 3), dtype=np.uint8)
    rgb[:, : size // 2, 0] = 255
    rgb[: size // 2, size // 2 :, 1] = 255
    return rgb
