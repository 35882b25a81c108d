"""``cmi quantize``: an fp32 ONNX model to int8 with ONNX Runtime, judged against its parent.

The story: open the fp32 model (its lineage says how to preprocess) -> ``quant_pre_process``
(shape inference, graph clean-up) -> ``quantize_static`` in QDQ format, calibrated on real
training images (or ``quantize_dynamic``) -> score fp32 and int8 on the validation split in
one pass (mIoU of each, pixel agreement between them) -> time both -> write the int8 file with
its lineage and the measured delta, named ``.REJECTED`` when it lost more mIoU than allowed.

Types: uint8 activations with int8 weights (``QUInt8``/``QInt8``) by default; on x86 CPUs ONNX
Runtime's u8s8 kernels ran 1.6x faster than s8s8 in our measurements. Dynamic quantization
turns convolutions into ``ConvInteger``, which ran several times slower than fp32: it is an
option for comparison, not a default for CNNs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.errors import UsageError
from cmi_cli.export.metadata import sha256_file
from cmi_cli.utils.files import publish, temp_beside

MODES = ("static", "dynamic")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
TYPES = ("uint8", "int8")
REJECTED_TAG = "REJECTED"

log = logging.getLogger(__name__)


@dataclass
class QuantizeSettings:
    """How to quantize; every field is recorded in the int8 model's lineage."""

    mode: str = "static"
    calib_size: int = 32
    calib_method: str = "minmax"
    # Per-channel weight scales: on our CNNs they lost no mIoU where per-tensor lost about
    # 0.01, and ran as fast or faster at batch 8 (benchmarks/optimise.py).
    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"

    def check(self) -> None:
        """Reject values ONNX Runtime would not accept, naming the option."""
        for name, value, allowed in (
            ("--mode", self.mode, MODES),
            ("--calib-method", self.calib_method, CALIBRATION_METHODS),
            ("--activation-type", self.activation_type, TYPES),
            ("--weight-type", self.weight_type, TYPES),
        ):
            if value not in allowed:
                raise UsageError(f"{name} {value!r} is unknown", hint=f"Use {' or '.join(allowed)}")
        if self.calib_size < 1:
            raise UsageError(f"--calib-size must be >= 1, got {self.calib_size}")


@dataclass
class ModelMeasure:
    """One side of the comparison."""

    size_mb: float
    latency_ms: float
    miou: float


@dataclass
class QuantizeResult:
    """The int8 file, both measurements, and whether the mIoU drop was within the limit."""

    path: Path
    parent: Path
    settings: QuantizeSettings
    fp32: ModelMeasure
    int8: ModelMeasure
    pixel_agreement: float
    max_miou_drop: float
    split: str
    num_images: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def miou_drop(self) -> float:
        """The mIoU lost: fp32 minus int8."""
        return self.fp32.miou - self.int8.miou

    @property
    def accepted(self) -> bool:
        """Whether the drop is within ``max_miou_drop``."""
        return self.miou_drop <= self.max_miou_drop

    def delta(self) -> dict[str, Any]:
        """The measured delta recorded in the int8 model's lineage."""
        return {
            "split": self.split,
            "num_images": self.num_images,
            "miou_fp32": round(self.fp32.miou, 6),
            "miou_int8": round(self.int8.miou, 6),
            "miou_drop": round(self.miou_drop, 6),
            "max_miou_drop": self.max_miou_drop,
            "accepted": self.accepted,
            "pixel_agreement": round(self.pixel_agreement, 6),
            "size_ratio": round(self.fp32.size_mb / max(self.int8.size_mb, 1e-9), 3),
            "latency_ratio": round(self.fp32.latency_ms / max(self.int8.latency_ms, 1e-9), 3),
            "latency_batch1_ms": {"fp32": self.fp32.latency_ms, "int8": self.int8.latency_ms},
        }

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe record."""
        return {
            "path": str(self.path),
            "parent": str(self.parent),
            "settings": asdict(self.settings),
            "fp32": asdict(self.fp32),
            "int8": asdict(self.int8),
            **self.delta(),
        }


def default_int8_path(model: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` in the same folder."""
    model = Path(model)
    return model.with_name(f"{model.stem}.int8.onnx")


def rejected_path(path: Path) -> Path:
    """``x.int8.onnx`` -> ``x.int8.REJECTED.onnx``: the name says it failed its accuracy check."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{REJECTED_TAG}{path.suffix}")


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QUInt8 if name == "uint8" else QuantType.QInt8


def run_quantizer(
    fp32: Path, out: Path, settings: QuantizeSettings, calibration: list[np.ndarray] | None
) -> None:
    """Pre-process ``fp32`` and quantize it to ``out`` with ONNX Runtime (no metadata changes)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cmi_cli.export.calibration import ImageCalibrationReader

    work = Path(tempfile.mkdtemp(prefix=".cmi-quant-", dir=out.parent)).resolve()
    try:
        pre = work / "pre.onnx"
        source = str(Path(fp32).resolve())
        # When ORT's symbolic shape inference gives up it saves the graph, with external data,
        # into the working directory; inside the scratch folder that goes away with it.
        with contextlib.chdir(work):
            try:
                quant_pre_process(source, str(pre))
            except Exception as exc:  # ORT raises a bare Exception for this
                if "symbolic shape inference" not in str(exc).lower():
                    raise
                # Some zoo graphs (timm's hard-swish, SegFormer's reshapes with dynamic sizes)
                # defeat ORT's symbolic shape inference; ONNX's own shape inference still
                # optimises and annotates the graph enough for static quantization.
                log.info("symbolic shape inference failed (%s); pre-processing without it", exc)
                quant_pre_process(source, str(pre), skip_symbolic_shape=True)
        if settings.mode == "dynamic":
            quantize_dynamic(
                str(pre),
                str(out),
                weight_type=_qtype(settings.weight_type),
                per_channel=settings.per_channel,
            )
            return
        methods = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        with _per_tensor_fallbacks_summarised():
            quantize_static(
                str(pre),
                str(out),
                ImageCalibrationReader(calibration or []),
                quant_format=QuantFormat.QDQ,
                activation_type=_qtype(settings.activation_type),
                weight_type=_qtype(settings.weight_type),
                per_channel=settings.per_channel,
                calibrate_method=methods[settings.calib_method],
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _per_tensor_fallbacks_summarised() -> Iterator[None]:
    """Replace ORT's warning per rank-1 weight by one info line.

    With ``per_channel``, ORT's QDQ quantizer warns on the root logger for every weight that
    has no channel axis (norm-layer scales, decoder constants: dozens in a ConvNeXt or
    SegFormer) and quantizes it per tensor, which is right for such weights.
    """
    fallbacks: list[str] = []

    def hold(record: logging.LogRecord) -> bool:
        if record.name == "root" and "is out-of-range for weight" in record.getMessage():
            fallbacks.append(record.getMessage())
            return False
        return True

    root = logging.getLogger()
    root.addFilter(hold)
    try:
        yield
    finally:
        root.removeFilter(hold)
    if fallbacks:
        log.info("%d weights without a channel axis were quantized per tensor", len(fallbacks))


def compare_on_split(
    fp32: Any, int8: Any, data_root: Path, split: str | None, batch_size: int
) -> tuple[str, int, float, float, float]:
    """Score two predictors on one split; return ``(split, n, miou fp32, miou int8, agreement)``.

    The int8 pass compares its argmax with the fp32 one of the same batch (the loader does not
    shuffle), so pixel agreement covers every pixel of the split.
    """
    from cmi_cli.training.evaluate import evaluate_predictor

    reference: list[np.ndarray] = []
    agree = [0, 0]

    def predict_fp32(batch: np.ndarray) -> np.ndarray:
        logits: np.ndarray = fp32.predict(batch)
        reference.append(logits.argmax(axis=1))
        return logits

    def predict_int8(batch: np.ndarray) -> np.ndarray:
        logits: np.ndarray = int8.predict(batch)
        ref = reference[agree[1]]
        agree[0] += int((logits.argmax(axis=1) == ref).sum())
        agree[1] += 1
        return logits

    lineage = fp32.lineage
    split, n, scores_fp32 = evaluate_predictor(predict_fp32, data_root, split, lineage, batch_size)
    _, _, scores_int8 = evaluate_predictor(predict_int8, data_root, split, lineage, batch_size)
    pixels = sum(int(r.size) for r in reference)
    return split, n, float(scores_fp32.miou), float(scores_int8.miou), agree[0] / max(pixels, 1)


def batch1_latencies(predictors: list[Any], size: int, repeats: int = 20) -> list[float]:
    """Median batch-1 latency (ms) of each predictor, timed in interleaved rounds."""
    from cmi_cli.export.timing import time_calls

    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    calls = [functools.partial(p.predict, x) for p in predictors]
    for call in calls:
        time_calls(call, repeats=0, warmup=3)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            times[i] += time_calls(call, repeats=1, warmup=0)
    return [round(float(np.median(t)) * 1000, 3) for t in times]


def quantize_onnx(
    model: Path,
    out: Path | None = None,
    settings: QuantizeSettings | None = None,
    *,
    calib_data: Path | None = None,
    data_root: Path | None = None,
    split: str | None = None,
    max_miou_drop: float = 0.01,
    batch_size: int = 8,
    graph_optimization_level: str = "all",
) -> QuantizeResult:
    """Quantize a cmi fp32 ONNX model to int8 and measure what it cost.

    Args:
        model: A ``.onnx`` from ``cmi export onnx``.
        out: Target; default ``<stem>.int8.onnx`` beside ``model``. When the mIoU drop exceeds
            ``max_miou_drop`` the file is written as ``<out stem>.REJECTED.onnx`` instead.
        settings: Mode, calibration and types (defaults: static QDQ, u8 activations, s8
            weights per channel, 32 min-max calibration images).
        calib_data: Dataset whose training split calibrates; default the model's own.
        data_root: Dataset for the fp32/int8 comparison; default ``calib_data`` or the model's.
        split: Split to compare on; default the model's validation split (carved from train).
        max_miou_drop: Largest accepted mIoU loss.
        batch_size: Images per inference while scoring.
        graph_optimization_level: ONNX Runtime optimisation level for scoring and timing.

    Returns:
        The written path (``accepted`` tells which name it got) and both measurements.

    Raises:
        ArtifactError: The model is missing, truncated, not ONNX, or not from cmi.
        UsageError: An invalid setting, or a model that is already quantized.
        DataError: The calibration or evaluation data is not found.
    """
    from cmi_cli.export.metadata import write_lineage
    from cmi_cli.export.ort_predict import OnnxPredictor
    from cmi_cli.training.evaluate import resolve_eval_data

    settings = settings or QuantizeSettings()
    settings.check()
    model = Path(model)
    fp32 = OnnxPredictor(model, graph_optimization_level=graph_optimization_level)
    lineage = fp32.lineage
    if lineage.get("kind") != "onnx":
        raise UsageError(
            f"{model} is a {lineage.get('kind')!r} model, not an fp32 export",
            hint="Quantize the model.onnx written by 'cmi export onnx'",
        )
    calib_root = resolve_eval_data(lineage, calib_data)
    eval_root = resolve_eval_data(lineage, data_root or calib_data)
    target = Path(out) if out is not None else default_int8_path(model)
    calibration = None
    if settings.mode == "static":
        from cmi_cli.export.calibration import calibration_batches

        calibration = calibration_batches(calib_root, lineage, settings.calib_size)

    import onnx

    # The final name depends on the measured drop, so the file is made under a temporary
    # name beside the target and moved once that is known; a failure leaves nothing behind.
    tmp = temp_beside(target, ".onnx")
    try:
        run_quantizer(model, tmp, settings, calibration)
        record = _int8_lineage(lineage, model, settings, calib_root, len(calibration or []))
        proto = onnx.load(str(tmp))
        write_lineage(proto, record)
        onnx.save(proto, str(tmp))
        int8 = OnnxPredictor(tmp, graph_optimization_level=graph_optimization_level)
        io_names = (int8.input_name, int8.output_name)
        # Keeping or rejecting the int8 model is a selection: it is made on the validation
        # split (carved from train), never on test, which only `cmi evaluate` reports.
        val_split = split or (lineage.get("data") or {}).get("val_split")
        split_name, n, miou32, miou8, agreement = compare_on_split(
            fp32, int8, eval_root, val_split, batch_size
        )
        size = int(lineage["preprocessing"]["image_size"])
        lat32, lat8 = batch1_latencies([fp32, int8], size)
        del int8  # release the session before the file is rewritten
        result = QuantizeResult(
            path=target,
            parent=model,
            settings=settings,
            fp32=ModelMeasure(round(model.stat().st_size / 1e6, 4), lat32, miou32),
            int8=ModelMeasure(round(tmp.stat().st_size / 1e6, 4), lat8, miou8),
            pixel_agreement=agreement,
            max_miou_drop=max_miou_drop,
            split=split_name,
            num_images=n,
        )
        record["quantization"]["delta"] = result.delta()
        record["validation"] = int8_validation(result, proto, *io_names)
        record["metrics"] = {"val/miou": round(miou8, 6)}
        write_lineage(proto, record)
        onnx.save(proto, str(tmp))
        if not result.accepted:
            result.path = rejected_path(target)
        publish(tmp, result.path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _int8_lineage(
    parent: dict[str, Any],
    parent_path: Path,
    settings: QuantizeSettings,
    calib_root: Path,
    calib_images: int,
) -> dict[str, Any]:
    from cmi_cli.lineage import code_version, library_versions, now_iso

    # The parent's export facts (and its validation against PyTorch) and scores describe the
    # fp32 model: the int8 record gets its own checks and metrics once they are measured.
    own = ("parent", "created_at", "export", "metrics", "validation")
    record = {k: v for k, v in parent.items() if k not in own}
    record.update(
        kind="onnx-int8",
        created_at=now_iso(),
        # The fp32 model lies in the project: its git state, wherever the command runs from.
        code=code_version(parent_path),
        parent={
            "kind": parent.get("kind", "onnx"),
            "path": str(parent_path),
            "sha256": sha256_file(parent_path),
            # The checkpoint it came from, by identity (its full record is in that file).
            "parent": {
                k: v
                for k, v in (parent.get("parent") or {}).items()
                if k in ("kind", "path", "sha256")
            },
        },
        quantization={
            **asdict(settings),
            "format": "QDQ" if settings.mode == "static" else "QOperator (dynamic)",
            "calibration_data": str(calib_root) if settings.mode == "static" else None,
            "calibration_images": calib_images,
            "onnxruntime": library_versions()["onnxruntime"],
        },
    )
    return record


def int8_validation(
    result: QuantizeResult, proto: Any, input_name: str, output_name: str
) -> dict[str, Any]:
    """Return the int8 model's own checklist (``validation`` in its lineage).

    Args:
        result: The measured comparison with the fp32 parent.
        proto: The int8 ``onnx.ModelProto``.
        input_name: The int8 graph's input name.
        output_name: The int8 graph's output name.
    """
    import onnx

    from cmi_cli.export.metadata import INPUT_NAME, OUTPUT_NAME

    try:
        onnx.checker.check_model(proto)
        checker = "pass"
    except onnx.checker.ValidationError:
        checker = "fail"
    names_ok = (input_name, output_name) == (INPUT_NAME, OUTPUT_NAME)
    return {
        "against": "fp32 parent (ONNX Runtime)",
        "split": result.split,
        "num_images": result.num_images,
        "miou_drop": round(result.miou_drop, 6),
        "max_miou_drop": result.max_miou_drop,
        "pixel_agreement": round(result.pixel_agreement, 6),
        "checks": {
            "onnx_checker": checker,
            "input_output_names": "pass" if names_ok else "fail",
            "miou_drop": "pass" if result.accepted else "fail",
        },
    }
