"""The served model: a backend that maps a batch to logits, and the maths around it.

Preprocessing follows the model's lineage (resize to ``image_size`` bilinearly, RGB, 1/255,
mean/std, NCHW float32), exactly as training evaluated it. The ONNX backend imports no torch;
the torch backend (for checkpoints) imports it when it is chosen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from cmi_cli.classes import BACKGROUND_ID, class_colors
from cmi_cli.data.transforms import normalize, resize_image
from cmi_cli.errors import ArtifactError
from cmi_cli.export.upsample import upsample_argmax
from cmi_cli.monitoring.features import SoftmaxSummary, prediction_features, summarize_scores


class Backend(Protocol):
    """Something that maps a normalised ``[N, 3, H, W]`` float32 batch to ``[N, C, H, W]``."""

    lineage: dict[str, Any]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return logits for a batch."""
        ...


class TorchBackend:
    """A checkpoint run with torch (the ``--backend torch`` path; imports torch)."""

    def __init__(self, path: Path, threads: int) -> None:
        import torch

        from cmi_cli.training.checkpoint import load_model

        torch.set_num_threads(threads)
        self._torch = torch
        self.model, self.lineage = load_model(path)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return logits for a batch."""
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(np.ascontiguousarray(batch))).numpy()


def load_backend(path: Path, backend: str, threads: int) -> Backend:
    """Open ``path`` with the ONNX Runtime or torch backend.

    Raises:
        ArtifactError: If the file is missing or not a model of that kind.
    """
    if backend == "torch":
        return TorchBackend(path, threads)
    if path.suffix in {".ckpt", ".pt", ".pth"}:
        raise ArtifactError(
            f"{path} is a checkpoint, not an ONNX model",
            hint="Serve it with --backend torch, or export it with 'cmi export onnx'",
        )
    from cmi_cli.export.ort_predict import OnnxPredictor

    return OnnxPredictor(path, threads=threads)


@dataclass(frozen=True)
class ClassShare:
    """One class found in a prediction."""

    id: int
    name: str
    share: float
    confidence: float
    pixels: int


@dataclass(frozen=True)
class Segmentation:
    """A post-processed prediction at the model's resolution (``S x S``)."""

    mask: np.ndarray
    classes: list[ClassShare]
    summary: dict[str, Any]


class ServedModel:
    """A backend with the facts the service needs: id, classes, colours, preprocessing.

    Args:
        backend: The loaded backend (its ``lineage`` describes the model).
        path: The model file (its sha256 names the model).
        backend_name: ``onnx`` or ``torch``.
    """

    def __init__(self, backend: Backend, path: Path, backend_name: str) -> None:
        from cmi_cli.export.metadata import sha256_file

        self.backend, self.path, self.backend_name = backend, Path(path), backend_name
        self.lineage = dict(backend.lineage)
        pre = self.lineage.get("preprocessing") or {}
        try:
            self.image_size = int(pre["image_size"])
            self.mean = tuple(float(v) for v in pre["mean"])
            self.std = tuple(float(v) for v in pre["std"])
            self.class_names = [str(n) for n in self.lineage["class_names"]]
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(
                f"{path} has an incomplete lineage (preprocessing or class names missing)",
                hint="Export it again with 'cmi export onnx'",
            ) from None
        if not 1 <= len(self.class_names) <= 255:
            raise ArtifactError(f"{path} has {len(self.class_names)} classes; 1..255 served")
        self.name = str((self.lineage.get("model") or {}).get("name", self.path.stem))
        self.sha256 = sha256_file(self.path)
        self.id = f"{self.name}-{self.sha256[:12]}"
        self.colors = class_colors(len(self.class_names))
        self._palette = np.array(self.colors, dtype=np.uint8)
        self._info: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: Path, backend: str, threads: int) -> ServedModel:
        """Load a model file with a backend."""
        return cls(load_backend(Path(path), backend, threads), path, backend)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """Return the ``[3, S, S]`` float32 input for an ``HxWx3`` uint8 photo."""
        s = self.image_size
        return normalize(resize_image(rgb, s, s), self.mean, self.std)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """Run the backend; return logits and the milliseconds it took."""
        start = time.perf_counter()
        logits = self.backend.predict(batch)
        return logits, (time.perf_counter() - start) * 1000

    def warmup(self, runs: int = 2) -> None:
        """Run the model on blank input so the first request does not pay for allocation."""
        blank = np.zeros((1, 3, self.image_size, self.image_size), dtype=np.float32)
        for _ in range(runs):
            self.backend.predict(blank)

    def postprocess(self, logits: np.ndarray) -> Segmentation:
        """Reduce ``[C, H, W]`` logits to a mask, class shares and confidences.

        Shares are of the model-resolution (``S x S``) mask, the grid JSON responses and the
        prediction log use; confidence is the mean max-softmax of the class's pixels, on the
        sampled grid of :func:`summarize_scores` (exactly, for a class too small to appear on
        that grid). Photo-size masks come from :meth:`segment_full`.
        """
        summary = summarize_scores(logits)
        feats = prediction_features(summary, self.class_names)
        counts = np.bincount(summary.mask.ravel(), minlength=len(self.class_names))
        grid_mask = summary.sampled_mask.ravel()
        conf_sum = np.bincount(grid_mask, summary.confidence.ravel(), len(self.class_names))
        grid_count = np.bincount(grid_mask, minlength=len(self.class_names))
        classes = []
        for cid in np.argsort(-counts, kind="stable"):
            if counts[cid] == 0:
                break
            if grid_count[cid]:
                conf = float(conf_sum[cid] / grid_count[cid])
            else:
                conf = _exact_confidence(logits, summary, int(cid))
            share = float(counts[cid] / summary.mask.size)
            classes.append(
                ClassShare(int(cid), self.class_names[cid], share, conf, int(counts[cid]))
            )
        return Segmentation(summary.mask.astype(np.uint8), classes, feats)

    def segment_full(
        self, logits: np.ndarray, width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the photo-size mask and confidence of one image's ``[C, S, S]`` logits.

        The logits are upsampled bilinearly (half-pixel, as the model's input was resized)
        to ``height x width`` before the argmax, so boundaries follow the photo's pixels
        instead of ``S x S`` blocks; memory stays bounded for any photo size (see
        :func:`cmi_cli.export.upsample.upsample_argmax`; numpy only, no torch).

        Returns:
            ``(mask uint8 [height, width], confidence float32 [height, width])``.
        """
        return upsample_argmax(logits, int(height), int(width))

    def class_shares(self, mask: np.ndarray, confidence: np.ndarray) -> list[ClassShare]:
        """Return the classes of a photo-size mask, largest first.

        Each with its share of the mask's pixels and the mean confidence of those pixels
        (the pair :meth:`segment_full` returns).
        """
        n = len(self.class_names)
        flat = mask.ravel()
        counts = np.bincount(flat, minlength=n)
        conf_sum = np.bincount(flat, confidence.ravel(), minlength=n)
        out = []
        for cid in np.argsort(-counts, kind="stable"):
            if counts[cid] == 0:
                break
            out.append(
                ClassShare(
                    int(cid),
                    self.class_names[cid],
                    float(counts[cid] / flat.size),
                    float(conf_sum[cid] / counts[cid]),
                    int(counts[cid]),
                )
            )
        return out

    def full_mask(self, mask: np.ndarray, width: int, height: int) -> np.ndarray:
        """Resize a model-resolution mask with nearest neighbour (blocky edges).

        Kept for masks without logits; prefer :meth:`segment_full`, which upsamples the logits.
        """
        if mask.shape == (height, width):
            return mask
        img = Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(img)

    def overlay(self, rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
        """Blend the class colours over the photo; background pixels stay as they are.

        ``mask`` should be the photo-size mask of :meth:`segment_full`; a smaller one is
        enlarged with nearest neighbour.
        """
        full = self.full_mask(mask, rgb.shape[1], rgb.shape[0])
        weight = np.where(full == BACKGROUND_ID, 0.0, alpha).astype(np.float32)[..., None]
        colored = self._palette[full].astype(np.float32)
        out = rgb.astype(np.float32) * (1 - weight) + colored * weight
        return out.round().astype(np.uint8)

    def info(self) -> dict[str, Any]:
        """The model's public description for ``GET /v1/model`` (built once)."""
        if self._info is None:
            self._info = self._describe()
        return self._info

    def _describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "backend": self.backend_name,
            "sha256": self.sha256,
            "input_size": self.image_size,
            "num_classes": len(self.class_names),
            "classes": [
                {"id": i, "name": n, "color": "#{:02x}{:02x}{:02x}".format(*self.colors[i])}
                for i, n in enumerate(self.class_names)
            ],
            "preprocessing": self.lineage.get("preprocessing") or {},
            "metrics": _json_numbers(self.lineage.get("metrics") or {}),
            "lineage": self.lineage,
        }


def _exact_confidence(logits: np.ndarray, summary: SoftmaxSummary, cid: int) -> float:
    ys, xs = np.nonzero(summary.mask == cid)
    pix = logits[:, ys, xs].astype(np.float32)
    pix = np.exp(pix - pix.max(axis=0, keepdims=True))
    return float((1 / pix.sum(axis=0)).mean())


def _json_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Keep the finite numeric metrics (JSON has no NaN)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            out[str(key)] = float(value)
    return out
