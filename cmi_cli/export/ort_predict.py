"""Inference with ONNX Runtime on numpy arrays: the predictor serving and benchmarks share.

Imports only numpy and onnxruntime (never torch), so a serving image without torch can use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.errors import ArtifactError, UsageError
from cmi_cli.export.metadata import INPUT_NAME, OUTPUT_NAME, lineage_from_metadata

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int | None = None, graph_optimization_level: str = "all") -> Any:
    """Return ``onnxruntime.SessionOptions`` for a thread count and optimisation level.

    Args:
        threads: Intra-op threads; None lets ONNX Runtime use all physical cores.
        graph_optimization_level: One of ``disable``, ``basic``, ``extended``, ``all``.

    Raises:
        UsageError: If the level or thread count is invalid.
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if graph_optimization_level not in levels:
        raise UsageError(
            f"unknown graph optimisation level {graph_optimization_level!r}",
            hint=f"Use one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}",
        )
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}", hint="Omit it to use all cores")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[graph_optimization_level]
    options.intra_op_num_threads = threads or 0
    options.log_severity_level = 3  # errors only: ORT's warnings are noise for users
    return options


class OnnxPredictor:
    """An ONNX Runtime session on a cmi ONNX model, with the model's lineage.

    Args:
        path: A ``.onnx`` written by ``cmi export onnx`` (or derived from one).
        threads: Intra-op threads; None: ONNX Runtime's default (all physical cores).
        graph_optimization_level: ``disable``, ``basic``, ``extended`` or ``all``.
        providers: Execution providers; default CPU only.

    Attributes:
        path: The model file.
        lineage: The lineage record from the file's metadata.
        input_name: The graph's input name (``image``).
        output_name: The graph's output name (``logits``).
        session: The ``onnxruntime.InferenceSession``.

    Raises:
        ArtifactError: If the file is missing, not a loadable ONNX model, or has no cmi lineage.
    """

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        graph_optimization_level: str = "all",
        providers: list[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"ONNX model not found: {self.path}", hint="Check the path")
        options = session_options(threads, graph_optimization_level)
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... classes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ArtifactError(
                f"{self.path} is not a loadable ONNX model ({first})",
                hint="Export it again with 'cmi export onnx'",
            ) from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.lineage: dict[str, Any] = lineage_from_metadata(meta, self.path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        self.input_shape: list[Any] = list(inputs[0].shape)
        self.output_names = [o.name for o in outputs]
        if self.input_name != INPUT_NAME or OUTPUT_NAME not in self.output_names:
            raise ArtifactError(
                f"{self.path} has input {self.input_name!r} and outputs {self.output_names}; "
                f"expected {INPUT_NAME!r} -> {OUTPUT_NAME!r}",
                hint="Export it again with 'cmi export onnx'",
            )
        self.output_name = OUTPUT_NAME

    @property
    def class_names(self) -> list[str]:
        """Class names by id, from the lineage."""
        return list(self.lineage.get("class_names", []))

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing the model expects (image size, mean, std, ...)."""
        return dict(self.lineage.get("preprocessing", {}))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return logits ``[N, C, H, W]`` for a normalised float32 batch ``[N, 3, H, W]``.

        Raises:
            UsageError: If the batch does not have the shape the graph accepts.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise UsageError(
                f"expected a batch of shape [N, 3, H, W], got {list(batch.shape)}",
                hint="Preprocess images as the model's lineage says (RGB, NCHW, normalised)",
            )
        for axis, want in enumerate(self.input_shape):
            if isinstance(want, int) and want > 0 and batch.shape[axis] != want:
                raise UsageError(
                    f"{self.path.name} is a static model for input {self.input_shape}, "
                    f"got {list(batch.shape)}",
                    hint="Resize the input, or export with --dynamic",
                )
        (logits,) = self.session.run([self.output_name], {self.input_name: batch})
        return np.asarray(logits)

    __call__ = predict
