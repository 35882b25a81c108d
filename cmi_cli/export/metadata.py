"""The ONNX metadata contract: how a ``model.onnx`` carries its lineage.

Graph: one input ``image`` (float32 ``[N, 3, H, W]``, RGB, scaled by 1/255 then normalised
with the lineage's ``preprocessing.mean``/``std``) and one output ``logits`` (float32
``[N, C, H, W]``, ``C = num_classes``).

``metadata_props``: ``cmi_lineage`` holds the lineage record as JSON (kind ``onnx``, the
checkpoint's facts, ``parent`` = the checkpoint's path and sha256, ``export`` = opset, dynamic
axes, exporter, torch version); ``cmi_format`` is :data:`FORMAT`.

Reading never imports torch, and tries ONNX Runtime before the ``onnx`` package, so that the
serving image, which has only onnxruntime, can read it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmi_cli import __version__
from cmi_cli.errors import ArtifactError

if TYPE_CHECKING:
    import onnx

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
LINEAGE_KEY = "cmi_lineage"
FORMAT_KEY = "cmi_format"
FORMAT = "1"
PRODUCER = "cmi-cli"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_lineage(model: onnx.ModelProto, lineage: dict[str, Any]) -> None:
    """Store ``lineage`` in ``model``'s metadata and set its producer fields (in place).

    Args:
        model: The exported ONNX model.
        lineage: A JSON-able lineage record (``kind`` should be ``onnx``).
    """
    props = {p.key: p.value for p in model.metadata_props}
    props[LINEAGE_KEY] = json.dumps(lineage, sort_keys=True, default=str)
    props[FORMAT_KEY] = FORMAT
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = PRODUCER
    model.producer_version = __version__
    name = lineage.get("model", {}).get("name", "model")
    model.doc_string = (
        f"cmi-cli semantic segmentation ({name}, {lineage.get('num_classes')} classes): "
        f"input '{INPUT_NAME}' float32 [N,3,H,W] normalised, output '{OUTPUT_NAME}' "
        f"float32 [N,C,H,W]. Lineage JSON in metadata key '{LINEAGE_KEY}'."
    )


def read_metadata(path: Path) -> dict[str, str]:
    """Return the custom metadata map of an ONNX file.

    Raises:
        ArtifactError: If the file is missing, truncated or not an ONNX model.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX model not found: {path}", hint="Check the path")
    try:
        return _metadata_via_ort(path)
    except Exception:  # ORT missing, or it refuses a file it cannot run: parse it instead
        pass
    return _metadata_via_onnx(path)


def _metadata_via_ort(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def _metadata_via_onnx(path: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:
        raise ArtifactError(
            f"{path} is not a loadable ONNX model (ONNX Runtime could not open it)",
            hint="Export it again with 'cmi export onnx'",
        ) from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError or onnx errors
        raise ArtifactError(
            f"{path} is not an ONNX model or is truncated ({type(exc).__name__})",
            hint="Export it again with 'cmi export onnx'",
        ) from None
    if not model.graph.node and not model.metadata_props:
        raise ArtifactError(f"{path} is not an ONNX model (no graph)", hint="Pass a .onnx file")
    return {p.key: p.value for p in model.metadata_props}


def lineage_from_metadata(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """Return the lineage record held in an ONNX model's custom metadata map.

    Args:
        meta: The ``custom_metadata_map`` (or ``metadata_props`` as a dict).
        path: The file it came from, for messages.

    Raises:
        ArtifactError: If there is no cmi lineage, or it is damaged or of a newer format.
    """
    if LINEAGE_KEY not in meta:
        raise ArtifactError(
            f"{path} has no cmi lineage metadata",
            hint="Pass an ONNX model written by 'cmi export onnx'",
        )
    fmt = meta.get(FORMAT_KEY, FORMAT)
    if fmt != FORMAT:
        raise ArtifactError(
            f"{path} uses cmi metadata format {fmt}, this cmi reads format {FORMAT}",
            hint="Upgrade cmi-cli or export the model again",
        )
    try:
        lineage = json.loads(meta[LINEAGE_KEY])
    except json.JSONDecodeError:
        lineage = None
    if not isinstance(lineage, dict):
        raise ArtifactError(f"{path} has a damaged cmi lineage record", hint="Export it again")
    return lineage


def read_lineage(path: Path) -> dict[str, Any]:
    """Return the lineage record stored in an ONNX model written by ``cmi export onnx``.

    Imports no torch (and only falls back on the ``onnx`` package when ONNX Runtime cannot
    open the file).

    Raises:
        ArtifactError: If the file is missing, truncated, not ONNX, or has no cmi lineage.
    """
    return lineage_from_metadata(read_metadata(path), Path(path))
