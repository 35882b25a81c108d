import json
from pathlib import Path

import numpy as np
import pytest
from _make import encode, make_image, write_folder, write_parquet
from PIL import Image
from rich.console import Console

from cmi_cli.data.stats import compute_stats, render_stats, write_class_share_plot
from cmi_cli.errors import DataError

NAMES = ["background", "rice", "egg", "tomato", "bread"]


def known_pairs() -> dict[str, list[tuple[str, bytes, bytes]]]:
    """Masks with hand-counted pixels: 0:10, 1:31, 2:5, 3:10 labelled, 4 ignore; 4 absent."""
    rng = np.random.default_rng(0)
    a = np.ones((4, 5), dtype=np.uint8)
    a[0, :] = 2  # 15 x 1, 5 x 2
    b = np.zeros((4, 5), dtype=np.uint8)
    b[2:, :] = 3  # 10 x 0, 10 x 3
    c = np.ones((4, 5), dtype=np.uint8)
    c[0, :4] = 255  # 16 x 1, 4 ignore

    def pair(stem: str, mask: np.ndarray) -> tuple[str, bytes, bytes]:
        return stem, encode(make_image(4, 5, rng), "JPEG"), encode(mask)

    return {"train": [pair("a", a), pair("b", b)], "test": [pair("c", c)]}


@pytest.fixture(params=["folder", "parquet"])
def dataset(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    splits = known_pairs()
    if request.param == "folder":
        return write_folder(tmp_path, splits, names=NAMES)
    splits["validation"] = splits.pop("test")
    root = write_parquet(tmp_path, splits)
    (root / "category_id.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(NAMES)))
    return root


def test_counts_and_shares_match_the_hand_count(dataset: Path) -> None:
    stats = compute_stats(dataset, show_progress=False)
    val = "test" if stats.layout == "folder" else "validation"

    assert stats.images == {"train": 2, val: 1}
    assert stats.pixels == {0: 10, 1: 31, 2: 5, 3: 10}
    assert stats.pixels_per_split == {"train": {0: 10, 1: 15, 2: 5, 3: 10}, val: {1: 16}}
    assert stats.ignore_pixels == 4
    shares = stats.shares()
    assert shares[1] == pytest.approx(31 / 56)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert 4 not in shares
    assert stats.class_names == NAMES


def test_to_dict_is_json_ready(dataset: Path) -> None:
    data = json.loads(json.dumps(compute_stats(dataset, show_progress=False).to_dict()))
    assert data["labelled_pixels"] == 56
    assert data["classes_present"] == 4
    assert data["num_classes"] == 5
    assert data["classes"][1] == {"id": 1, "name": "rice", "pixels": 31, "share": 31 / 56}


def test_render_lists_most_and_least_common_classes(dataset: Path) -> None:
    stats = compute_stats(dataset, show_progress=False)
    console = Console(record=True, width=120)
    render_stats(stats, console, top=2)
    text = console.export_text()

    assert "4 of 5 classes present" in text
    most, least = text.split("Most common classes")[1].split("Least common classes")
    assert "rice" in most
    assert "55.36%" in most
    assert "egg" in least
    assert "8.93%" in least
    assert "bread" not in text  # absent classes are not ranked


def test_class_share_plot_is_a_valid_png(dataset: Path, tmp_path: Path) -> None:
    stats = compute_stats(dataset, show_progress=False)
    out = write_class_share_plot(stats, tmp_path / "plots" / "shares.png")

    assert out == tmp_path / "plots" / "shares.png"
    with Image.open(out) as img:
        assert img.format == "PNG"
        width, height = img.size
        img.load()
    assert 400 <= width <= 2000
    assert 100 <= height <= 2000
    assert [p.name for p in out.parent.iterdir()] == ["shares.png"]  # no temp file left


def test_unreadable_masks_are_skipped_and_listed(tmp_path: Path) -> None:
    splits = known_pairs()
    splits["train"].append(("broken", splits["train"][0][1], b"not a png"))
    stats = compute_stats(write_folder(tmp_path, splits), show_progress=False)
    assert stats.unreadable == ["train/broken"]
    assert stats.pixels[1] == 31


def test_plot_without_labelled_pixels_is_an_error(tmp_path: Path) -> None:
    ignore = np.full((4, 5), 255, dtype=np.uint8)
    rng = np.random.default_rng(0)
    write_folder(
        tmp_path, {"train": [("a", encode(make_image(4, 5, rng), "JPEG"), encode(ignore))]}
    )
    stats = compute_stats(tmp_path, show_progress=False)
    with pytest.raises(DataError, match="no labelled pixels"):
        write_class_share_plot(stats, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
