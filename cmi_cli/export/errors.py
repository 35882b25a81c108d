"""Typed errors of ONNX export and validation.

Each validation check has its own error class so a caller (and a test) can tell which promise
the exported model broke; :class:`OnnxValidationError` gathers them all into one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from cmi_cli.errors import CmiError


class ValidationReport(Protocol):
    """What :class:`OnnxValidationError` reads of a validation report.

    A protocol, not an import of ``validate_onnx.ValidationReport``: the errors module stays below
    the module that raises them.
    """

    @property
    def checks(self) -> Sequence[object]:
        """Every check of the checklist."""

    @property
    def failures(self) -> Sequence[CmiError]:
        """The errors of the failed checks."""


class ExportError(CmiError):
    """Exporting a model failed, or the exported model does not behave like its source."""


class CheckerError(ExportError):
    """``onnx.checker`` rejects the model, or ONNX Runtime cannot load it."""


class OutputNameError(ExportError):
    """The graph's input or output names differ from the contract (``image`` -> ``logits``)."""


class ShapeError(ExportError):
    """The output shape is not ``[N, num_classes, H, W]`` for an ``[N, 3, H, W]`` input."""


class AtolError(ExportError):
    """ONNX Runtime's logits differ from PyTorch's by more than the tolerance."""


class ArgmaxAgreementError(ExportError):
    """The predicted classes of ONNX Runtime and PyTorch disagree on too many pixels."""


class DynamicAxesError(ExportError):
    """A dynamic export does not accept other batch sizes or image sizes."""


class OnnxValidationError(ExportError):
    """One or more validation checks failed; ``report`` holds the whole checklist.

    Args:
        report: The validation report whose failures this error summarises.
    """

    def __init__(self, report: ValidationReport):
        failed = report.failures
        names = ", ".join(f"{type(e).__name__}: {e.message}" for e in failed)
        super().__init__(
            f"ONNX validation failed ({len(failed)} of {len(report.checks)} checks): {names}",
            hint="No file was written; see the checklist above",
        )
        # The whole validate_onnx.ValidationReport (Any: this module does not import it).
        self.report: Any = report
