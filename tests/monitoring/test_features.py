"""Image and prediction features move the way their names say."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cmi_cli.monitoring.features import (
    image_features,
    prediction_features,
    summarize_scores,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A textured, colourful 160x120 image."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.stack([xx * 1.5, yy * 2.0, 255 - xx], -1) + rng.normal(0, 25, (120, 160, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_keys_and_size(photo: np.ndarray) -> None:
    f = image_features(photo)
    assert set(f) == {
        "width", "height", "aspect", "brightness", "contrast", "saturation",
        "colourfulness", "sharpness", "hue_mean", "hue_std",
    }  # fmt: skip
    assert (f["width"], f["height"], f["aspect"]) == (160, 120, pytest.approx(160 / 120))
    assert 0 <= f["brightness"] <= 1
    assert 0 <= f["saturation"] <= 1
    assert 0 <= f["hue_mean"] < 360


def test_blur_lowers_sharpness(photo: np.ndarray) -> None:
    blurred = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(3)))
    assert image_features(blurred)["sharpness"] < 0.2 * image_features(photo)["sharpness"]


def test_brightening_raises_brightness(photo: np.ndarray) -> None:
    brighter = np.clip(photo.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    assert image_features(brighter)["brightness"] > image_features(photo)["brightness"] + 0.15


def test_grey_has_no_colour_and_flat_has_no_contrast(photo: np.ndarray) -> None:
    grey = np.repeat(photo.mean(-1, keepdims=True).astype(np.uint8), 3, -1)
    g = image_features(grey)
    assert g["saturation"] < 0.02
    assert g["colourfulness"] < 1
    assert image_features(photo)["colourfulness"] > 20
    flat = np.full((50, 50, 3), 128, np.uint8)
    assert image_features(flat)["contrast"] == 0
    assert image_features(flat)["sharpness"] == 0


def test_hue_follows_the_dominant_colour() -> None:
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 220
    green = np.roll(red, 1, axis=-1)
    assert (image_features(red)["hue_mean"] + 180) % 360 - 180 == pytest.approx(0, abs=2)
    assert image_features(green)["hue_mean"] == pytest.approx(120, abs=3)
    assert image_features(red)["hue_std"] < 1
    mixed = np.concatenate([red, green], axis=1)
    assert image_features(mixed)["hue_std"] > 30


def test_features_are_scale_stable_and_fast(photo: np.ndarray) -> None:
    big = np.asarray(Image.fromarray(photo).resize((1600, 1200), Image.Resampling.BILINEAR))
    small, large = image_features(photo), image_features(big)
    assert large["brightness"] == pytest.approx(small["brightness"], abs=0.02)
    assert large["colourfulness"] == pytest.approx(small["colourfulness"], rel=0.15)
    start = time.perf_counter()
    image_features(big)
    assert time.perf_counter() - start < 0.5


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        image_features(np.zeros((4, 4), np.uint8))


def test_prediction_features_from_logits() -> None:
    logits = np.zeros((4, 8, 8), np.float32)
    logits[1, :, :6] = 10  # class 1 on 48 pixels, sure
    logits[2, :, 6:] = 0.1  # class 2 on 16 pixels, unsure
    f = prediction_features(logits, ["bg", "rice", "egg", "tea"], top_k=1)
    assert f["class_shares"] == {"rice": 0.75, "egg": 0.25}
    assert f["top_classes"] == [{"id": 1, "name": "rice", "share": 0.75}]
    assert f["num_classes_present"] == 2
    unsure = np.exp(0.1) / (np.exp(0.1) + 3)
    assert f["p10_confidence"] == pytest.approx(unsure, rel=1e-3)
    assert f["mean_confidence"] == pytest.approx(0.75 + 0.25 * unsure, rel=1e-3)
    assert f["mean_entropy"] > 0


def test_probabilities_and_logits_agree() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (5, 16, 16)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    a = prediction_features(logits, list("abcde"))
    b = prediction_features(probs, list("abcde"), from_logits=False)
    for key in ("mean_confidence", "p10_confidence", "mean_entropy"):
        assert a[key] == pytest.approx(b[key], rel=1e-4)
    assert a["class_shares"] == b["class_shares"]


def test_confidence_grid_is_subsampled_but_unbiased() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (3, 512, 512)).astype(np.float32)
    summary = summarize_scores(logits, max_grid=128)
    assert summary.stride == 4
    assert summary.confidence.shape == (128, 128)
    assert summary.mask.shape == (512, 512)
    full = summarize_scores(logits, max_grid=512)
    assert summary.confidence.mean() == pytest.approx(full.confidence.mean(), rel=0.01)


def test_fast_argmax_matches_numpy_including_ties() -> None:
    from cmi_cli.monitoring.features import fast_argmax

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, (7, 20, 30)).astype(np.float32)  # many ties
    assert np.array_equal(fast_argmax(scores), scores.argmax(0))
    many = rng.normal(size=(300, 4, 5)).astype(np.float32)
    assert np.array_equal(fast_argmax(many), many.argmax(0))
