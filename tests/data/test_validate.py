import io
import json
from pathlib import Path

import numpy as np
import pytest
from _make import encode, make_pairs, write_folder, write_parquet
from rich.console import Console

from cmi_cli.data.validate import render_validation, validate_dataset
from cmi_cli.errors import DataError


def kinds(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {p.key: p.kind for p in report.problems}


def with_ignore(mask_png: bytes, pixels: int) -> bytes:
    from PIL import Image

    mask = np.asarray(Image.open(io.BytesIO(mask_png))).copy()
    mask.flat[:pixels] = 255
    return encode(mask)


@pytest.fixture
def faulty_folder(tmp_path: Path) -> Path:
    """A folder dataset with one of each planted fault, exactly one per pair."""
    pairs = make_pairs(7, size=(24, 32))
    good, label150, mismatch, truncated, nomask, rgbmask, ignored = pairs
    mask150 = np.zeros((24, 32), dtype=np.uint8)
    mask150[3:6, 3:6] = 150
    write_folder(
        tmp_path,
        {
            "train": [
                good,
                (label150[0], label150[1], encode(mask150)),
                (mismatch[0], mismatch[1], encode(np.zeros((20, 32), dtype=np.uint8))),
                (truncated[0], truncated[1][: len(truncated[1]) // 2], truncated[2]),
                (rgbmask[0], rgbmask[1], encode(np.zeros((24, 32, 3), dtype=np.uint8))),
                (ignored[0], ignored[1], with_ignore(ignored[2], 10)),
            ],
            "test": [make_pairs(1, seed=3)[0]],
        },
    )
    # An image with no mask, and a mask with no image.
    (tmp_path / "Images/img_dir/train" / f"{nomask[0]}.jpg").write_bytes(nomask[1])
    (tmp_path / "Images/ann_dir/test/orphan.png").write_bytes(good[2])
    return tmp_path


def test_each_planted_fault_is_found_with_its_kind(faulty_folder: Path) -> None:
    report = validate_dataset(faulty_folder, show_progress=False)

    assert not report.ok
    assert kinds(report) == {
        "train/00001": "label-out-of-range",
        "train/00002": "size-mismatch",
        "train/00003": "undecodable-image",
        "train/00004": "missing-mask",
        "train/00005": "mask-not-single-channel",
        "test/orphan": "missing-image",
    }
    by_key = {p.key: p for p in report.problems}
    assert "150" in by_key["train/00001"].detail
    assert "[0, 104)" in by_key["train/00001"].detail
    assert "32x24" in by_key["train/00002"].detail
    assert "32x20" in by_key["train/00002"].detail
    assert "RGB" in by_key["train/00005"].detail
    assert report.checked == {"train": 7, "test": 2}
    assert report.ignore_pixels == 10
    assert report.counts()["label-out-of-range"] == 1


def test_clean_dataset_is_ok_and_counts_ignore_pixels(tmp_path: Path) -> None:
    pairs = make_pairs(3)
    stem, image, mask = pairs[0]
    write_folder(
        tmp_path,
        {"train": [(stem, image, with_ignore(mask, 7)), *pairs[1:]], "test": make_pairs(2, seed=9)},
    )
    report = validate_dataset(tmp_path, show_progress=False)

    assert report.ok, report.problems
    assert report.checked == {"train": 3, "test": 2}
    assert report.ignore_pixels == 7


def test_num_classes_bounds_the_labels(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(4)})  # masks hold ids up to 5
    assert validate_dataset(tmp_path, num_classes=6, show_progress=False).ok
    narrow = validate_dataset(tmp_path, num_classes=3, show_progress=False)
    assert set(kinds(narrow).values()) == {"label-out-of-range"}
    with pytest.raises(DataError):
        validate_dataset(tmp_path / "missing", show_progress=False)


def test_empty_split_is_a_problem(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(1)})
    (tmp_path / "Images/img_dir/test").mkdir()
    report = validate_dataset(tmp_path, show_progress=False)
    assert [(p.split, p.kind) for p in report.problems] == [("test", "empty-split")]


def test_parquet_faults_are_found(tmp_path: Path) -> None:
    pairs = make_pairs(5)
    mask150 = np.full((24, 32), 150, dtype=np.uint8)
    rows = [
        pairs[0],
        (pairs[1][0], pairs[1][1], encode(mask150)),
        (pairs[2][0], b"\xff\xd8 definitely not a jpeg", pairs[2][2]),
        (pairs[3][0], pairs[3][1], None),
        (pairs[4][0], pairs[4][1], b"garbage"),
    ]
    write_parquet(tmp_path, {"train": rows, "validation": make_pairs(1, seed=4)})
    report = validate_dataset(tmp_path, show_progress=False)

    assert report.layout == "parquet"
    assert kinds(report) == {
        "train-00001": "label-out-of-range",
        "train-00002": "undecodable-image",
        "train-00003": "missing-mask",
        "train-00004": "undecodable-mask",
    }
    assert report.checked == {"train": 5, "validation": 1}


def test_report_serialises_and_renders(faulty_folder: Path) -> None:
    report = validate_dataset(faulty_folder, show_progress=False)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["problem_counts"]["size-mismatch"] == 1
    assert len(data["problems"]) == 6

    console = Console(record=True, width=160)
    render_validation(report, console)
    text = console.export_text()
    assert "label-out-of-range" in text
    assert "train/00001" in text
    assert "6 problems in 9 pairs" in text


def test_clean_report_renders_a_summary(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(2)})
    console = Console(record=True, width=160)
    render_validation(validate_dataset(tmp_path, show_progress=True), console)
    text = console.export_text()
    assert "2 pairs checked" in text
    assert "no problems" in text


def test_every_problem_names_its_file_the_check_and_the_fix(faulty_folder: Path) -> None:
    # Zero-byte files: PIL's own message for them is a BytesIO repr.
    (faulty_folder / "Images/img_dir/test/empty.jpg").write_bytes(b"")
    (faulty_folder / "Images/ann_dir/test/empty.png").write_bytes(b"")
    stem = make_pairs(1, seed=5)[0]
    (faulty_folder / "Images/img_dir/test/zeromask.jpg").write_bytes(stem[1])
    (faulty_folder / "Images/ann_dir/test/zeromask.png").write_bytes(b"")
    report = validate_dataset(faulty_folder, show_progress=False)
    files = {p.kind: p.file for p in report.problems}
    assert files["label-out-of-range"] == "Images/ann_dir/train/00001.png"
    assert files["undecodable-image"] in (
        "Images/img_dir/train/00003.jpg",
        "Images/img_dir/test/empty.jpg",
    )
    assert files["missing-mask"] == "Images/img_dir/train/00004.jpg"
    assert files["missing-image"] == "Images/ann_dir/test/orphan.png"
    for p in report.problems:
        assert p.file, p
        assert not Path(p.file).is_absolute(), p
        assert p.fix, p
    text = json.dumps(report.to_dict())
    assert "BytesIO" not in text
    assert "<_io" not in text
    empty = [p for p in report.problems if p.file.endswith("empty.jpg")]
    assert [p.detail for p in empty] == ["the file is empty (0 bytes)"]
    zero_mask = [p for p in report.problems if p.file.endswith("zeromask.png")]
    assert [(p.kind, p.detail) for p in zero_mask] == [
        ("undecodable-mask", "the file is empty (0 bytes)")
    ]

    console = Console(record=True, width=240)
    render_validation(report, console)
    rendered = console.export_text()
    assert "Images/ann_dir/train/00001.png" in rendered
    assert "BytesIO" not in rendered
    assert "class id in 0..103" in rendered  # the fix of a label out of range
