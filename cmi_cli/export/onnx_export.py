"""``cmi export onnx``: a checkpoint to a validated ONNX model that carries its lineage.

The chain: load the checkpoint -> trace it to ONNX in a temporary file beside the target ->
validate the file against PyTorch (:mod:`cmi_cli.export.validate_onnx`) -> write the lineage
with the validation summary -> move it into place. A failure at any step leaves no file.
The checkpoint's drift reference is copied beside the model as ``<stem>.reference.csv`` and
named in its lineage (``reference``), so a served model can be compared with its training data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmi_cli.errors import UsageError
from cmi_cli.export.errors import ExportError
from cmi_cli.export.metadata import INPUT_NAME, OUTPUT_NAME, sha256_file, write_lineage
from cmi_cli.export.validate_onnx import ValidationReport, validate_onnx

# Opset 17 is the newest opset that the runtimes people deploy ONNX to all accept (ONNX Runtime
# >= 1.13, TensorRT 8.6, OpenVINO 2023, onnxruntime-web), and ORT's int8 quantizer is mature on
# it. torch 2.13's TorchScript exporter goes up to 20, but opsets 18-20 change nothing this
# graph uses (Conv, MaxPool, Relu, Resize, Concat, Shape/Slice): 18 moved Reduce* axes to inputs,
# 19/20 added types and new ops. --opset picks another within the exporter's range.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 11, 20  # Resize with a dynamic output size needs opset 11
EXPORTER = "torchscript"


@dataclass
class ExportResult:
    """What ``export_onnx`` wrote and how it validated."""

    path: Path
    lineage: dict[str, Any]
    report: ValidationReport
    size_bytes: int


def default_onnx_path(checkpoint: Path) -> Path:
    """Return ``<run>/model.onnx`` for ``<run>/checkpoints/x.ckpt``, else ``x.onnx`` beside it."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "model.onnx"
    return checkpoint.with_suffix(".onnx")


def dynamic_axes_spec() -> dict[str, dict[int, str]]:
    """Return the dynamic axes of a dynamic export: batch, height and width of input and output."""
    axes = {0: "batch", 2: "height", 3: "width"}
    return {INPUT_NAME: dict(axes), OUTPUT_NAME: dict(axes)}


def export_onnx(
    checkpoint: Path,
    out: Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    height: int | None = None,
    width: int | None = None,
    atol: float = 1e-4,
    min_agreement: float = 0.999,
    data_root: Path | None = None,
    num_images: int = 4,
    project_root: Path | None = None,
    rtol: float = 1e-4,
) -> ExportResult:
    """Export a ``cmi train`` checkpoint to ONNX, validate it, and write it atomically.

    Args:
        checkpoint: The ``.ckpt`` (or a run folder holding ``checkpoints/best.ckpt``).
        out: Target file; default :func:`default_onnx_path`.
        opset: ONNX opset version.
        dynamic: Dynamic batch, height and width (else fixed ``[1, 3, height, width]``).
        height: Input height of a static export (and of the validation inputs); default the
            lineage's image size.
        width: Input width, likewise.
        atol: Absolute part of the allowed difference of each logit between ONNX Runtime and
            PyTorch: ``|onnx - torch| <= atol + rtol * m``, ``m`` the image's largest
            ``|torch logit|``.
        min_agreement: Smallest allowed share of pixels with the same argmax class.
        data_root: Dataset for validation images; default the one in the lineage.
        num_images: Validation images to compare on.
        project_root: Project whose git state is recorded as the exporting code's version.
        rtol: Relative part of the allowed difference (float32 rounding grows with the
            logits' magnitude; a fixed atol fails large-logit networks for no fault).

    Returns:
        The written path, its lineage and the validation report.

    Raises:
        UsageError: For an opset or size out of range.
        ArtifactError: If the checkpoint is missing, truncated, not a checkpoint, or its weights
            do not fit its recorded architecture.
        OnnxValidationError: If any validation check failed (its ``report`` has the checklist).
    """
    from cmi_cli.export.reference import reference_for_export
    from cmi_cli.training.checkpoint import load_model
    from cmi_cli.utils.files import atomic_path, atomic_write_bytes

    checkpoint = _resolve_checkpoint(Path(checkpoint))
    _check_options(opset, height, width, atol, min_agreement, num_images)
    if not rtol >= 0:
        raise UsageError(f"--rtol must be >= 0, got {rtol}")
    out = Path(out) if out is not None else default_onnx_path(checkpoint)
    if out.resolve() == checkpoint.resolve():
        raise UsageError(f"--out {out} would overwrite the checkpoint", hint="Pick another path")
    model, ckpt_lineage = load_model(checkpoint)
    size = int(ckpt_lineage["preprocessing"]["image_size"])
    h, w = height or size, width or size
    from cmi_cli.models.registry import check_image_size

    check_image_size(model, h, "--height")
    check_image_size(model, w, "--width")

    with atomic_path(out, suffix=".onnx") as tmp:
        _trace_to_onnx(model, tmp, opset=opset, dynamic=dynamic, height=h, width=w)
        lineage = onnx_lineage(ckpt_lineage, checkpoint, opset, dynamic, project_root)
        _write_metadata(tmp, lineage)
        report = validate_onnx(
            tmp,
            model,
            ckpt_lineage,
            dynamic=dynamic,
            height=h,
            width=w,
            atol=atol,
            min_agreement=min_agreement,
            data_root=data_root,
            num_images=num_images,
            rtol=rtol,
        )
        report.raise_if_failed()
        lineage["export"]["validation"] = report.to_dict()
        reference = reference_for_export(checkpoint, out, model, ckpt_lineage, data_root)
        if reference is not None:
            lineage["reference"] = reference[1]
            atomic_write_bytes(out.with_name(reference[1]["file"]), reference[0])
        _write_metadata(tmp, lineage)
    return ExportResult(out, lineage, report, out.stat().st_size)


def _resolve_checkpoint(path: Path) -> Path:
    if path.is_dir() and (path / "checkpoints" / "best.ckpt").is_file():
        return path / "checkpoints" / "best.ckpt"
    return path


def _check_options(
    opset: int,
    height: int | None,
    width: int | None,
    atol: float,
    min_agreement: float,
    num_images: int,
) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(
            f"--opset {opset} is outside {MIN_OPSET}..{MAX_OPSET}",
            hint=f"torch's TorchScript exporter supports up to {MAX_OPSET}; the default is "
            f"{DEFAULT_OPSET}",
        )
    for name, value in (("--height", height), ("--width", width)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if not atol > 0:
        raise UsageError(f"--atol must be > 0, got {atol}")
    if not 0 <= min_agreement <= 1:
        raise UsageError(f"argmax agreement must be in 0..1, got {min_agreement}")
    if num_images < 1:
        raise UsageError(f"number of validation images must be >= 1, got {num_images}")


def _trace_to_onnx(
    model: Any, path: Path, *, opset: int, dynamic: bool, height: int, width: int
) -> None:
    import torch

    dummy = torch.zeros(1, 3, height, width)
    # The TorchScript exporter on purpose (dynamo=False): the dynamo exporter needs onnxscript,
    # which is not a dependency, and for these plain CNNs TorchScript tracing is stable, fast and
    # honours dynamic_axes. torch warns that it is the legacy path; that choice is deliberate.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # A note, not a fault: a strided Slice (UPerNet's pooling) is left for the runtime to
        # fold; the checklist below compares the outputs anyway.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        try:
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_axes=dynamic_axes_spec() if dynamic else None,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many internal types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ExportError(
                f"torch.onnx.export failed at opset {opset}: {first}",
                hint="Try another --opset, or rerun with --verbose for the traceback",
            ) from exc


def onnx_lineage(
    ckpt_lineage: dict[str, Any],
    checkpoint: Path,
    opset: int,
    dynamic: bool,
    project_root: Path | None = None,
) -> dict[str, Any]:
    """Return the lineage of an ONNX export: the checkpoint's facts, its identity, the export.

    Args:
        ckpt_lineage: The checkpoint's lineage record.
        checkpoint: The checkpoint file (hashed into ``parent.sha256``).
        opset: The ONNX opset used.
        dynamic: Whether batch, height and width are dynamic.
        project_root: Project whose git state is the exporting code's version.
    """
    from cmi_cli.lineage import library_versions, make_lineage

    lineage = make_lineage(
        kind="onnx",
        class_names=list(ckpt_lineage["class_names"]),
        preprocessing=ckpt_lineage["preprocessing"],
        model=ckpt_lineage["model"],
        config=ckpt_lineage.get("config", {}),
        data=ckpt_lineage.get("data", {}),
        metrics=ckpt_lineage.get("metrics"),
        # The checkpoint lies in the project: its git state, wherever the command runs from.
        project_root=project_root or checkpoint,
        parent={
            "kind": "checkpoint",
            "path": str(checkpoint),
            "sha256": sha256_file(checkpoint),
            "created_at": ckpt_lineage.get("created_at"),
            "code": ckpt_lineage.get("code"),
        },
    )
    lineage["export"] = {
        "opset": opset,
        "dynamic_axes": dynamic_axes_spec() if dynamic else None,
        "exporter": EXPORTER,
        "torch": library_versions()["torch"],
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
    }
    return lineage


def _write_metadata(path: Path, lineage: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    write_lineage(model, lineage)
    onnx.save(model, str(path))
