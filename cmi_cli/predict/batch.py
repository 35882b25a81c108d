"""The unit of work: one batch of photo references -> outputs written -> journal records.

:class:`BatchPredictor` holds one model (one ONNX Runtime session or torch module) and is
called with a batch of :class:`~cmi_cli.predict.sources.PhotoRef`. Local workers hold one
each; on Ray Data or Spark the same class is built once per worker and mapped over batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmi_cli.predict.segment import segment_bytes
from cmi_cli.predict.sources import PhotoReader, PhotoRef
from cmi_cli.predict.writers import journal_record, write_photo_outputs

if TYPE_CHECKING:
    from cmi_cli.predict.nutrition import NutritionOptions
    from cmi_cli.serving.predictor import ServedModel


class BatchPredictor:
    """Predict batches of photos with one model and write their outputs under ``out``.

    Args:
        model: The served model (its own session; not shared between workers).
        out: The output folder.
        save: Kinds to write: ``mask``, ``overlay`` (``table`` is the caller's).
        nutrition: With ``--nutrition``: each photo's estimate goes into its journal record.
    """

    def __init__(
        self,
        model: ServedModel,
        out: Path,
        save: Sequence[str],
        nutrition: NutritionOptions | None = None,
    ) -> None:
        self.model, self.out, self.save = model, Path(out), tuple(save)
        self.nutrition = nutrition
        self.reader = PhotoReader()

    def describe(self) -> dict[str, Any]:
        """The model facts a run records: id, name, backend, sha256, size, classes."""
        m = self.model
        return {
            "path": str(m.path),
            "id": m.id,
            "name": m.name,
            "backend": m.backend_name,
            "sha256": m.sha256,
            "input_size": m.image_size,
            "num_classes": len(m.class_names),
            "preprocessing": m.lineage.get("preprocessing") or {},
            "data": m.lineage.get("data") or {},
        }

    def __call__(self, refs: Sequence[PhotoRef]) -> list[dict[str, Any]]:
        """Predict a batch; return one journal record or ``{"image", "error"}`` per photo.

        An unreadable or undecodable photo gets its reason and the others go on; a failure of
        the model itself, or of the disk, is raised.
        """
        blobs: list[bytes | None] = []
        reasons: dict[int, str] = {}
        for i, ref in enumerate(refs):
            try:
                blobs.append(self.reader.read(ref))
            except (OSError, ValueError) as exc:
                blobs.append(None)
                reasons[i] = (
                    f"cannot read: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
                )
        segs = segment_bytes(self.model, blobs, keep_rgb="overlay" in self.save)
        out: list[dict[str, Any]] = []
        for i, (ref, seg) in enumerate(zip(refs, segs, strict=True)):
            if seg.error:
                out.append({"image": ref.key, "error": reasons.get(i, seg.error)})
                continue
            write_photo_outputs(
                self.out,
                ref.out_name,
                seg,
                self.save,
                self.model.colors,
                overlay=self.model.overlay,
                source=f"{ref.key} | model {self.model.id}",
            )
            estimate = None
            if self.nutrition is not None:
                estimate = self.nutrition.estimate(seg, self.model.class_names)
            out.append(journal_record(ref.key, ref.out_name, seg, self.save, estimate))
        return out
