"""Photo-size masks: logits upsampled bilinearly before the argmax, in numpy, like torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cmi_cli.export.upsample import source_positions, upsample_argmax, upsample_labels
from cmi_cli.serving.predictor import ServedModel


class GridBackend:
    """A backend that returns fixed logits: the served maths is what is under test."""

    def __init__(self, logits: np.ndarray, size: int) -> None:
        self.logits = logits
        self.lineage: dict[str, Any] = {
            "class_names": [f"c{i}" for i in range(logits.shape[0])],
            "preprocessing": {"image_size": size, "mean": [0.5] * 3, "std": [0.25] * 3},
            "model": {"name": "grid"},
        }

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.repeat(self.logits[None], len(batch), axis=0)


def diagonal_logits(size: int = 16) -> np.ndarray:
    """Two classes split by the diagonal x = y, with scores that vary smoothly across it."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack([ys - xs, xs - ys + 0.5]).astype(np.float32)


def served(tmp_path: Path, logits: np.ndarray) -> ServedModel:
    path = tmp_path / "grid.onnx"
    path.write_bytes(b"stand-in file: only its sha256 names the model")
    return ServedModel(GridBackend(logits, logits.shape[-1]), path, "onnx")


def largest_step(mask: np.ndarray) -> int:
    """The largest jump, between neighbouring rows, of the column where class 1 starts.

    Rows of the middle half only: at the borders the half-pixel rule clamps to the edge.
    """
    n = len(mask)
    middle = mask[n // 4 : 3 * n // 4]
    starts = np.array([int(np.argmax(row == 1)) for row in middle if (row == 1).any()])
    assert len(starts) == len(middle)
    return int(np.abs(np.diff(starts)).max())


@pytest.mark.parametrize(
    ("classes", "h", "w", "height", "width"),
    [(5, 7, 9, 23, 31), (104, 16, 16, 37, 53), (3, 16, 16, 8, 5), (4, 8, 8, 8, 8)],
)
def test_numpy_upsampling_equals_torch_bilinear_half_pixel(
    classes: int, h: int, w: int, height: int, width: int
) -> None:
    import torch
    import torch.nn.functional as F

    logits = np.random.default_rng(classes).normal(size=(classes, h, w)).astype(np.float32)
    ref = F.interpolate(
        torch.from_numpy(logits)[None], (height, width), mode="bilinear", align_corners=False
    )[0]
    ref_mask = ref.argmax(0).numpy()
    ref_conf = ref.softmax(0).max(0).values.numpy()
    # Small bands, so the banding itself is exercised.
    mask, conf = upsample_argmax(logits, height, width, exact=True, band_bytes=4096)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(conf, ref_conf, atol=1e-5)
    fast_mask, fast_conf = upsample_argmax(logits, height, width, band_bytes=4096)
    np.testing.assert_array_equal(fast_mask, ref_mask)
    assert np.abs(fast_conf - ref_conf).max() < 0.1
    np.testing.assert_array_equal(upsample_labels(logits, height, width, 4096), ref_mask)


def test_source_positions_follow_the_half_pixel_rule() -> None:
    low, high, weight = source_positions(8, 4)
    src = np.clip((np.arange(8) + 0.5) * 0.5 - 0.5, 0, None)
    np.testing.assert_allclose(low + weight, src)
    assert high.max() == 3
    assert low.min() == 0


def test_mask_has_the_photo_size_for_odd_sizes(tmp_path: Path) -> None:
    model = served(tmp_path, diagonal_logits())
    mask, confidence = model.segment_full(model.infer(np.zeros((1, 3, 16, 16), "f4"))[0][0], 37, 23)
    assert mask.shape == confidence.shape == (23, 37)
    assert mask.dtype == np.uint8
    assert confidence.dtype == np.float32
    assert set(np.unique(mask)) == {0, 1}
    assert ((confidence >= 0.5) & (confidence <= 1)).all()


def test_diagonal_boundary_has_pixel_steps_not_model_pixel_blocks(tmp_path: Path) -> None:
    model = served(tmp_path, diagonal_logits(16))
    logits = diagonal_logits(16)
    mask, _ = model.segment_full(logits, 128, 128)
    # Nearest enlargement of the 16 px mask jumps 8 photo pixels per 8 rows.
    blocky = model.full_mask(logits.argmax(0).astype(np.uint8), 128, 128)
    assert largest_step(blocky) == 8
    assert largest_step(mask) <= 1
    # The overlay drawn from the photo-size mask shows the same smooth edge.
    photo = np.full((128, 128, 3), 200, dtype=np.uint8)
    overlay = model.overlay(photo, mask)
    tinted = (overlay != photo).any(axis=2)
    assert largest_step(tinted.astype(np.uint8)) <= 1


def test_class_shares_come_from_the_photo_size_mask(tmp_path: Path) -> None:
    model = served(tmp_path, diagonal_logits(16))
    mask, confidence = model.segment_full(diagonal_logits(16), 101, 77)
    shares = model.class_shares(mask, confidence)
    assert sum(c.pixels for c in shares) == 101 * 77
    assert abs(sum(c.share for c in shares) - 1) < 1e-9
    assert {c.id for c in shares} == {0, 1}


def test_a_huge_photo_never_holds_a_full_size_logit_volume() -> None:
    import tracemalloc

    # 104 classes at 1500 x 1000: the float32 volume alone would be 624 MB.
    logits = np.zeros((104, 8, 8), dtype=np.float32)
    logits[3, :, 4:] = 5.0
    tracemalloc.start()
    mask, _confidence = upsample_argmax(logits, 1000, 1500, band_bytes=8 * 2**20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert mask.shape == (1000, 1500)
    # The outputs (1.5 MB + 6 MB) plus bands of about 8 MB.
    assert peak < 40 * 2**20, peak
    assert set(np.unique(mask)) == {0, 3}


def test_upsampling_imports_no_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from cmi_cli.export.upsample import upsample_argmax\n"
        "upsample_argmax(np.zeros((3, 4, 4), 'f4'), 9, 7)\n"
        "import cmi_cli.serving.predictor\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
