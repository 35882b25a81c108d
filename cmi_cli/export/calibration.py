"""Calibration images for static int8 quantization: real training photos, preprocessed as served.

Imports no torch: images go through the numpy :class:`EvalTransform` with the model's lineage
preprocessing, so the activation ranges ONNX Runtime measures are those the model sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cmi_cli.errors import DataError


def calibration_batches(
    data_root: Path, lineage: dict[str, Any], size: int, split: str | None = None, seed: int = 0
) -> list[np.ndarray]:
    """Return ``size`` preprocessed images ``[1, 3, S, S]`` drawn from the training split.

    Args:
        data_root: Dataset root.
        lineage: The model's lineage (preprocessing, training split name).
        size: Number of images; all of the split when it holds fewer.
        split: Split to draw from; default the lineage's training split.
        seed: Seed of the draw (the same seed, the same images).

    Raises:
        DataError: The dataset or split is missing or empty.
    """
    from cmi_cli.data.layout import open_dataset
    from cmi_cli.data.transforms import EvalTransform

    source = open_dataset(Path(data_root))
    split = split or str(lineage.get("data", {}).get("train_split") or "train")
    if split not in source.splits():
        raise DataError(
            f"dataset {data_root} has no {split!r} split for calibration",
            hint=f"Pass --calib-data with a dataset holding {split!r}",
        )
    items = list(source.items(split))
    if not items:
        raise DataError(f"split {split!r} of {data_root} is empty", hint="Check the dataset")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(items), size=min(size, len(items)), replace=False)
    pre = lineage["preprocessing"]
    transform = EvalTransform(int(pre["image_size"]), tuple(pre["mean"]), tuple(pre["std"]))
    batches = []
    for index in sorted(int(i) for i in chosen):
        image, mask = source.read(items[index])
        tensor, _ = transform(image, mask)
        batches.append(tensor[None])
    return batches


class ImageCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over preprocessed images, one per call.

    Args:
        batches: Arrays ``[1, 3, H, W]``.
        input_name: The graph's input name.
    """

    def __init__(self, batches: list[np.ndarray], input_name: str = "image") -> None:
        self.batches = batches
        self.input_name = input_name
        self._iter: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Return the next input feed, or None when all images were given."""
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._iter = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
