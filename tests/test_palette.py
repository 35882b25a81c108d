"""The class colours: 104 colours any two of which a viewer tells apart, used everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from cmi_cli.classes import NUM_CLASSES, class_colors, hue_colors
from cmi_cli.palette import MIN_CIEDE2000, PALETTE, ciede2000, generate_palette, srgb_to_lab

# Sharma, Wu and Dalal (2005), table 1: (L*a*b* 1, L*a*b* 2, CIEDE2000), chosen to exercise
# the hue wrap-around, the chroma-zero case and the blue-region rotation term.
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0011), 7.2195),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (50.0, 3.1736, 0.5854), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


@pytest.mark.parametrize(("lab1", "lab2", "expected"), SHARMA)
def test_ciede2000_matches_the_published_test_data(lab1, lab2, expected) -> None:
    assert float(ciede2000(np.array(lab1), np.array(lab2))) == pytest.approx(expected, abs=1e-4)
    assert float(ciede2000(np.array(lab2), np.array(lab1))) == pytest.approx(expected, abs=1e-4)


def _pairwise(colors: list[tuple[int, int, int]]) -> np.ndarray:
    lab = srgb_to_lab(np.array(colors))
    d = ciede2000(lab[:, None, :], lab[None, :, :])
    np.fill_diagonal(d, np.inf)
    return d


def test_any_two_of_the_104_class_colours_differ_visibly() -> None:
    colors = class_colors()
    assert len(colors) == NUM_CLASSES == len(set(colors))
    d = _pairwise(colors)
    assert d.min() >= 10, f"closest pair {np.unravel_index(d.argmin(), d.shape)}: {d.min():.2f}"
    assert round(float(d.min()), 1) == MIN_CIEDE2000  # the figure the docs state
    # The old golden-ratio hues: this is what the table replaced.
    assert _pairwise(hue_colors(NUM_CLASSES)).min() < 2


def test_background_is_black_and_no_class_looks_like_it() -> None:
    colors = class_colors()
    assert colors[0] == (0, 0, 0)
    assert _pairwise(colors)[0, 1:].min() >= 10


def test_other_class_counts_take_a_prefix_or_extend() -> None:
    assert class_colors(12) == class_colors()[:12]
    more = class_colors(120)
    assert more[:NUM_CLASSES] == class_colors()
    assert len(more) == 120


def test_plots_and_masks_use_the_palette() -> None:
    from cmi_cli.training.reports import colorize

    mask = np.arange(NUM_CLASSES, dtype=np.uint8).reshape(8, 13)
    rgb = colorize(mask, NUM_CLASSES)
    assert [tuple(int(v) for v in px) for px in rgb.reshape(-1, 3)] == class_colors()


@pytest.mark.slow
def test_the_table_is_what_the_generator_makes() -> None:
    assert tuple(generate_palette()) == PALETTE
