"""Validation of an exported ONNX model against the PyTorch model it came from.

Every check runs (a failure does not stop the next one) and lands in a :class:`ValidationReport`
as a checklist row; the typed errors of :mod:`cmi_cli.export.errors` say which promise broke.
The comparison uses real images of the model's dataset, preprocessed as in evaluation, and
falls back on random tensors (with a warning) only when the data is not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cmi_cli.console import warn
from cmi_cli.errors import CmiError
from cmi_cli.export.errors import (
    ArgmaxAgreementError,
    AtolError,
    CheckerError,
    DynamicAxesError,
    ExportError,
    OnnxValidationError,
    OutputNameError,
    ShapeError,
)
from cmi_cli.export.metadata import INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    from rich.console import Console

# An odd, non-square size that no stride of the network divides: catches baked-in shapes.
ODD_SIZE = (67, 45)


@dataclass
class Check:
    """One row of the checklist: ``status`` is ``pass``, ``fail``, ``warn`` or ``skip``."""

    name: str
    status: str
    detail: str
    error: ExportError | None = None


@dataclass
class ValidationReport:
    """The outcome of every validation check, with the measured differences."""

    atol: float
    min_agreement: float
    checks: list[Check] = field(default_factory=list)
    inputs: str = "dataset"
    max_abs_diff: float | None = None
    argmax_agreement: float | None = None
    rtol: float = 1e-4
    # max over logits of |onnx - torch| / (atol + rtol * max |torch| of the image): <= 1 passes
    max_tolerance_ratio: float | None = None

    @property
    def failures(self) -> list[ExportError]:
        """The errors of the failed checks, in checklist order."""
        return [c.error for c in self.checks if c.error is not None]

    @property
    def ok(self) -> bool:
        """Whether no check failed (warnings and skips do not fail)."""
        return not self.failures

    def passed(self, name: str, detail: str) -> None:
        """Record a passed check."""
        self.checks.append(Check(name, "pass", detail))

    def failed(self, name: str, error: ExportError) -> None:
        """Record a failed check and its error."""
        self.checks.append(Check(name, "fail", error.message, error))

    def raise_if_failed(self) -> None:
        """Raise :class:`OnnxValidationError` summarising every failure, if any."""
        if not self.ok:
            raise OnnxValidationError(self)

    def to_dict(self) -> dict[str, Any]:
        """Return the summary stored in the ONNX lineage (``export.validation``)."""
        return {
            "inputs": self.inputs,
            "atol": self.atol,
            "rtol": self.rtol,
            "tolerance": "|onnx - torch| <= atol + rtol * max |torch logit| of the image",
            "min_argmax_agreement": self.min_agreement,
            "max_abs_diff": self.max_abs_diff,
            "max_tolerance_ratio": self.max_tolerance_ratio,
            "argmax_agreement": self.argmax_agreement,
            "checks": {c.name: c.status for c in self.checks},
        }


def validate_onnx(
    onnx_path: Path,
    model: Any,
    lineage: dict[str, Any],
    *,
    dynamic: bool = True,
    height: int | None = None,
    width: int | None = None,
    atol: float = 1e-4,
    min_agreement: float = 0.999,
    data_root: Path | None = None,
    num_images: int = 4,
    rtol: float = 1e-4,
) -> ValidationReport:
    """Check an ONNX file against the PyTorch ``model`` it was exported from.

    Args:
        onnx_path: The exported file.
        model: The source ``nn.Module`` in eval mode.
        lineage: The source checkpoint's lineage (class names, preprocessing, data root).
        dynamic: Whether batch, height and width should be dynamic axes.
        height: Input height to compare at; default the lineage's image size.
        width: Input width to compare at; default the lineage's image size.
        atol: Absolute part of the allowed difference of each logit.
        min_agreement: Smallest allowed share of pixels whose argmax class agrees.
        data_root: Dataset for real inputs; default the one recorded in the lineage.
        num_images: How many validation images to compare on.
        rtol: Relative part: a logit may differ by ``atol + rtol * m``, ``m`` the largest
            ``|torch logit|`` of its image, since float32 rounding grows with the activations.

    Returns:
        The report; call :meth:`ValidationReport.raise_if_failed` to turn failures into an error.
    """
    report = ValidationReport(atol=atol, min_agreement=min_agreement, rtol=rtol)
    num_classes = int(lineage["num_classes"])
    size = int(lineage["preprocessing"]["image_size"])
    h, w = height or size, width or size

    _check_model(onnx_path, report)
    session = _open_session(onnx_path, report)
    if session is None:
        for name in ("names", "graph axes", "logits vs PyTorch"):
            report.checks.append(Check(name, "skip", "ONNX Runtime could not load the model"))
        return report
    _check_names(session, report)
    _check_graph_axes(session, report, dynamic, num_classes, h, w)

    images, note = reference_images(lineage, data_root, h, w, num_images)
    report.inputs = "dataset" if note is None else "random"
    if note is None:
        report.passed("inputs", f"{len(images)} real images of the validation split at {h}x{w}")
    else:
        warn(f"ONNX validation compares on random tensors: {note}")
        report.checks.append(Check("inputs", "warn", f"random tensors ({note})"))

    batches = [images] if dynamic else [images[i : i + 1] for i in range(len(images))]
    # In a dynamic export the comparison batch (N images at once) already exercises the batch axis.
    run_error = DynamicAxesError if dynamic and len(images) > 1 else ShapeError
    diffs, agree = _compare_batches(
        session, model, batches, num_classes, report, "logits vs PyTorch", run_error
    )
    if diffs:
        report.max_abs_diff = max(diffs)
        report.argmax_agreement = agree
        _judge_values(report, "logits vs PyTorch", max(diffs), agree, f"{len(images)} at {h}x{w}")

    if dynamic:
        _check_dynamic(session, model, images, num_classes, report)
    return report


def _check_model(path: Path, report: ValidationReport) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # checker raises ValidationError, InferenceError, ...
        report.failed("onnx.checker", CheckerError(f"onnx.checker: {_first_line(exc)}"))
        return
    report.passed("onnx.checker", "model is valid ONNX (full check with shape inference)")


def _open_session(path: Path, report: ValidationReport) -> Any:
    from cmi_cli.export.ort_predict import OnnxPredictor

    # The same session settings serving uses: what is validated is what will run.
    try:
        predictor = OnnxPredictor(path)
    except CmiError as exc:
        report.failed("onnxruntime", CheckerError(f"ONNX Runtime: {exc.message}"))
        return None
    report.passed("onnxruntime", "loads in ONNX Runtime with its cmi lineage metadata")
    return predictor.session


def _check_names(session: Any, report: ValidationReport) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        report.failed(
            "names",
            OutputNameError(
                f"graph maps {inputs} -> {outputs}, not ['{INPUT_NAME}'] -> ['{OUTPUT_NAME}']"
            ),
        )
    else:
        report.passed("names", f"{INPUT_NAME} -> {OUTPUT_NAME}")


def _check_graph_axes(
    session: Any, report: ValidationReport, dynamic: bool, num_classes: int, h: int, w: int
) -> None:
    shape_in = list(session.get_inputs()[0].shape)
    shape_out = list(session.get_outputs()[0].shape)
    if len(shape_in) != 4 or len(shape_out) != 4:
        report.failed("graph axes", ShapeError(f"graph shapes {shape_in} -> {shape_out} not 4-D"))
        return
    if shape_in[1] != 3 or shape_out[1] != num_classes:
        report.failed(
            "graph axes",
            ShapeError(
                f"graph maps {shape_in} -> {shape_out}; expected 3 -> {num_classes} channels"
            ),
        )
        return
    symbolic = [isinstance(d, str) for d in (*shape_in, *shape_out)]
    if dynamic and not all(symbolic[i] for i in (0, 2, 3, 4, 6, 7)):
        report.failed(
            "graph axes",
            DynamicAxesError(f"batch/height/width are not all dynamic: {shape_in} -> {shape_out}"),
        )
    elif not dynamic and (shape_in != [1, 3, h, w] or shape_out != [1, num_classes, h, w]):
        report.failed(
            "graph axes",
            ShapeError(f"static graph is {shape_in} -> {shape_out}, expected [1, 3, {h}, {w}]"),
        )
    else:
        report.passed("graph axes", f"{shape_in} -> {shape_out}")


def reference_images(
    lineage: dict[str, Any], data_root: Path | None, height: int, width: int, count: int
) -> tuple[np.ndarray, str | None]:
    """Return up to ``count`` validation images preprocessed as in evaluation, ``[N, 3, H, W]``.

    Returns:
        ``(batch, None)`` for real images, or ``(random batch, why)`` when the data is absent.
    """
    from cmi_cli.data.layout import default_val_split, open_dataset
    from cmi_cli.data.transforms import EvalTransform, normalize, resize_image

    pre = lineage["preprocessing"]
    mean, std = tuple(pre["mean"]), tuple(pre["std"])
    root = Path(data_root or lineage.get("data", {}).get("root", "data/foodseg103"))
    try:
        source = open_dataset(root)
        split = lineage.get("data", {}).get("val_split")
        split = split if split in source.splits() else default_val_split(source)
        items = source.items(split)[:count] if split in source.splits() else []
        if not items:
            raise CmiError(f"no images in split {split!r} of {root}")
        pairs = [source.read(item) for item in items]
    except CmiError as exc:
        rng = np.random.default_rng(0)
        batch = rng.standard_normal((count, 3, height, width), dtype=np.float32)
        return batch, f"{exc.message}; pass --data ROOT to compare on real images"
    if height == width:
        transform = EvalTransform(height, mean, std)
        arrays = [transform(image, mask)[0] for image, mask in pairs]
    else:  # EvalTransform is square-only; the same two steps at any size
        arrays = [normalize(resize_image(image, height, width), mean, std) for image, _ in pairs]
    return np.stack(arrays).astype(np.float32), None


def torch_logits(model: Any, batch: np.ndarray) -> np.ndarray:
    """Return the PyTorch model's logits for a numpy batch."""
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()


def _compare_batches(
    session: Any,
    model: Any,
    batches: list[np.ndarray],
    num_classes: int,
    report: ValidationReport,
    name: str,
    run_error: type[ExportError] = ShapeError,
) -> tuple[list[float], float]:
    diffs: list[float] = []
    same = total = 0
    for batch in batches:
        try:
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        except Exception as exc:  # ORT's own error classes
            report.failed(
                name, run_error(f"ONNX Runtime failed on {list(batch.shape)}: {_first_line(exc)}")
            )
            return [], 0.0
        want_shape = (batch.shape[0], num_classes, *batch.shape[2:])
        if got.shape != want_shape:
            report.failed(
                f"{name} shape",
                ShapeError(
                    f"output {list(got.shape)} for input {list(batch.shape)}, "
                    f"expected {list(want_shape)}"
                ),
            )
            return [], 0.0
        ref = torch_logits(model, batch)
        diff = np.abs(got - ref)
        diffs.append(float(np.max(diff)))
        # float32 rounding grows with the activations, not with each logit: a logit near zero
        # in an image whose logits are in the thousands carries the same absolute error.
        scale = np.abs(ref).reshape(len(ref), -1).max(axis=1).reshape(-1, 1, 1, 1)
        ratio = float(np.max(diff / (report.atol + report.rtol * scale)))
        report.max_tolerance_ratio = max(report.max_tolerance_ratio or 0.0, ratio)
        if np.isnan(diff).any():
            report.max_tolerance_ratio = float("nan")
        same += int(np.sum(got.argmax(axis=1) == ref.argmax(axis=1)))
        total += got.shape[0] * got.shape[2] * got.shape[3]
    return diffs, same / max(total, 1)


def _judge_values(
    report: ValidationReport, name: str, diff: float, agree: float, what: str
) -> None:
    ok = True
    ratio = report.max_tolerance_ratio
    tolerance = f"atol {report.atol:g} + rtol {report.rtol:g} x max |logit|"
    if ratio is None or not ratio <= 1.0 or diff != diff:  # also catches NaN
        over = f"x{ratio if ratio is not None else float('nan'):.3g} of it"
        report.failed(
            name, AtolError(f"max |diff| {diff:.2e} exceeds {tolerance} ({over}; {what})")
        )
        ok = False
    if not agree >= report.min_agreement:
        report.failed(
            f"{name} argmax",
            ArgmaxAgreementError(
                f"argmax agrees on {agree:.4%} of pixels < {report.min_agreement:.1%} ({what})"
            ),
        )
        ok = False
    if ok:
        report.passed(
            name,
            f"max |diff| {diff:.2e} within {tolerance} (x{ratio:.3g} of it), argmax agrees "
            f"on {agree:.4%} of pixels ({what})",
        )


def _check_dynamic(
    session: Any, model: Any, images: np.ndarray, num_classes: int, report: ValidationReport
) -> None:
    from cmi_cli.models.registry import input_divisor

    pair = np.concatenate([images, images])[:2]
    odd_h, odd_w = odd_size(input_divisor(model))
    odd = np.stack([_resize_float(img, odd_h, odd_w) for img in images[:1]])
    for label, batch in (("batch 2", pair), (f"size {odd_h}x{odd_w}", odd)):
        name = f"dynamic {label}"
        sub = ValidationReport(
            atol=report.atol, min_agreement=report.min_agreement, rtol=report.rtol
        )
        diffs, agree = _compare_batches(session, model, [batch], num_classes, sub, name)
        if sub.failures:
            report.failed(name, DynamicAxesError(sub.failures[0].message))
            continue
        report.max_abs_diff = max(report.max_abs_diff or 0.0, *diffs)
        _judge_values(sub, name, max(diffs), agree, f"input {list(batch.shape)}")
        report.checks.extend(sub.checks)
        report.max_tolerance_ratio = max(
            report.max_tolerance_ratio or 0.0, sub.max_tolerance_ratio or 0.0
        )


def odd_size(divisor: int = 1) -> tuple[int, int]:
    """Return a non-square size for the dynamic-size check that the model can take.

    :data:`ODD_SIZE` itself for models that take any size; for a model whose encoder needs
    multiples of ``divisor`` (the zoo's stride 32), the next multiples up, still non-square.
    """
    if divisor <= 1:
        return ODD_SIZE
    h, w = (-(-side // divisor) * divisor for side in ODD_SIZE)
    return (h + divisor, w) if h == w else (h, w)


def _resize_float(chw: np.ndarray, h: int, w: int) -> np.ndarray:
    # Normalised floats must not go through uint8: resize each channel as a float image.
    from PIL import Image

    channels = [
        np.asarray(Image.fromarray(c).resize((w, h), Image.Resampling.BILINEAR)) for c in chw
    ]
    return np.stack(channels).astype(np.float32)


def render_report(report: ValidationReport, console: Console) -> None:
    """Print the checklist: one row per check, with a mark, its name and what was measured."""
    from rich.table import Table

    marks = {
        "pass": "[green]✓[/green]",
        "fail": "[red]✗[/red]",
        "warn": "[yellow]![/yellow]",
        "skip": "[dim]-[/dim]",
    }
    table = Table(title="ONNX validation", show_header=False, box=None, title_justify="left")
    table.add_column(width=1)
    table.add_column(style="bold")
    table.add_column()
    for check in report.checks:
        table.add_row(marks[check.status], check.name, check.detail)
    console.print(table)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
