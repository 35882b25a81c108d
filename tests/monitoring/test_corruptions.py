"""Corruptions are deterministic, keep the photo's shape, and grow with severity."""

from __future__ import annotations

import numpy as np
import pytest

from cmi_cli.errors import UsageError
from cmi_cli.monitoring.corruptions import (
    CORRUPTIONS,
    corrupt,
    parse_corruptions,
    parse_severities,
)
from cmi_cli.monitoring.features import image_features


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:96, 0:128]
    img = np.stack([xx * 2, yy * 2, 200 - xx], -1) + rng.normal(0, 20, (96, 128, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_shape_dtype_and_determinism(photo: np.ndarray, name: str) -> None:
    a = corrupt(photo, name, 3, index=7)
    assert a.shape == photo.shape
    assert a.dtype == np.uint8
    assert np.array_equal(a, corrupt(photo, name, 3, index=7))
    assert not np.array_equal(a, photo)
    assert corrupt(photo, name, 0) is photo


def test_noise_depends_on_the_index(photo: np.ndarray) -> None:
    assert not np.array_equal(corrupt(photo, "noise", 2, 0), corrupt(photo, "noise", 2, 1))


@pytest.mark.parametrize(
    ("name", "feature", "direction"),
    [
        ("brightness", "brightness", 1),
        ("contrast", "contrast", -1),
        ("blur", "sharpness", -1),
        ("noise", "sharpness", 1),
    ],
)
def test_severity_moves_the_matching_feature(
    photo: np.ndarray, name: str, feature: str, direction: int
) -> None:
    values = [image_features(corrupt(photo, name, s))[feature] for s in range(0, 6)]
    steps = np.diff(values) * direction
    assert (steps > 0).all(), values


def test_jpeg_loses_more_detail_at_higher_severity(photo: np.ndarray) -> None:
    err = [np.abs(corrupt(photo, "jpeg", s).astype(int) - photo).mean() for s in (1, 5)]
    assert err[1] > err[0] > 0


def test_parsing() -> None:
    assert parse_corruptions("blur, noise,blur") == ["blur", "noise"]
    assert parse_corruptions("all") == list(CORRUPTIONS)
    assert parse_severities("1-5") == [1, 2, 3, 4, 5]
    assert parse_severities("5,1,3") == [1, 3, 5]
    assert parse_severities("2-3,5") == [2, 3, 5]
    for bad in ("0-2", "6", "a", "", "3-"):
        with pytest.raises(UsageError, match="invalid severities"):
            parse_severities(bad)
    with pytest.raises(UsageError, match="unknown corruption fog"):
        parse_corruptions("blur,fog")
    with pytest.raises(UsageError, match="unknown corruption"):
        corrupt(np.zeros((4, 4, 3), np.uint8), "fog", 1)
