import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from _make import make_pairs, write_folder, write_parquet, write_parquet_file
from PIL import Image, ImageFile

from cmi_cli.classes import NUM_CLASSES
from cmi_cli.data.layout import default_val_split, open_dataset
from cmi_cli.errors import DataError


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_folder_layout_lists_splits_items_and_class_names(tmp_path: Path) -> None:
    train, test = make_pairs(3, seed=1), make_pairs(2, seed=2)
    write_folder(tmp_path, {"train": train, "test": test}, names=["background", "rice", "egg"])
    source = open_dataset(tmp_path)

    assert source.kind == "folder"
    assert source.splits() == ["train", "test"]
    assert source.class_names == ["background", "rice", "egg"]
    items = source.items("train")
    assert [i.key for i in items] == ["train/00000", "train/00001", "train/00002"]
    assert all(i.split == "train" and i.complete for i in items)
    assert default_val_split(source) == "test"


def test_folder_layout_falls_back_to_packaged_class_names(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(1)})
    source = open_dataset(tmp_path)
    assert len(source.class_names) == NUM_CLASSES
    assert source.class_names[0] == "background"


def test_read_returns_rgb_image_and_exact_mask(tmp_path: Path) -> None:
    pairs = make_pairs(2, size=(20, 30))
    write_folder(tmp_path, {"train": pairs})
    source = open_dataset(tmp_path)
    image, mask = source.read(source.items("train")[1])

    assert image.shape == (20, 30, 3)
    assert image.dtype == np.uint8
    assert mask.shape == (20, 30)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, decoded(pairs[1][2]))
    np.testing.assert_array_equal(image, decoded(pairs[1][1]))
    assert source.read_mask_bytes(source.items("train")[1]) == pairs[1][2]


@pytest.mark.parametrize("where", ["data", "flat", "folders"])
def test_parquet_export_is_found_wherever_the_split_is_named(tmp_path: Path, where: str) -> None:
    pairs = make_pairs(3)
    write_parquet(tmp_path, {"train": pairs, "validation": make_pairs(1, seed=5)}, where=where)
    source = open_dataset(tmp_path)

    assert source.kind == "parquet"
    assert source.splits() == ["train", "validation"]
    assert default_val_split(source) == "validation"
    items = source.items("train")
    assert [i.key for i in items] == ["train-00000", "train-00001", "train-00002"]
    image, mask = source.read(items[2])
    np.testing.assert_array_equal(mask, decoded(pairs[2][2]))
    np.testing.assert_array_equal(image, decoded(pairs[2][1]))


def test_parquet_rows_across_files_and_row_groups_read_back_in_order(tmp_path: Path) -> None:
    first, second = make_pairs(5, seed=1), make_pairs(3, seed=2)
    write_parquet_file(tmp_path / "data" / "train-00000-of-00002.parquet", first, row_group_size=2)
    write_parquet_file(tmp_path / "data" / "train-00001-of-00002.parquet", second)
    source = open_dataset(tmp_path)
    items = source.items("train")

    assert len(items) == 8
    # Read out of order so the row-group cache is exercised, not just walked.
    for index in [7, 0, 4, 2, 5, 1, 6, 3]:
        expected = (first + second)[index][2]
        assert source.read_mask_bytes(items[index]) == expected


def test_parquet_source_pickles_after_reading_for_dataloader_workers(tmp_path: Path) -> None:
    pairs = make_pairs(2)
    write_parquet(tmp_path, {"train": pairs})
    source = open_dataset(tmp_path)
    item = source.items("train")[1]
    source.read(item)

    clone = pickle.loads(pickle.dumps(source))
    assert clone.read_mask_bytes(item) == pairs[1][2]


def test_parquet_without_image_columns_is_rejected(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"pixels": [b"x"]}), tmp_path / "train.parquet")
    source = open_dataset(tmp_path)
    with pytest.raises(DataError, match="no column image, label"):
        source.items("train")


def test_missing_root_and_unknown_layout_raise_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as missing:
        open_dataset(tmp_path / "nope")
    assert "cmi data sample" in (missing.value.hint or "")

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"not really")
    with pytest.raises(DataError, match="not a FoodSeg103 dataset") as unknown:
        open_dataset(tmp_path)
    assert "img_dir" in (unknown.value.hint or "")


def test_unknown_split_raises(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(1)})
    with pytest.raises(DataError, match="no split 'validation'"):
        open_dataset(tmp_path).items("validation")


def test_truncated_jpeg_fails_even_if_pillow_was_told_to_accept_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = make_pairs(1, size=(64, 64))
    stem, image, mask = pairs[0]
    write_folder(tmp_path, {"train": [(stem, image[: len(image) // 2], mask)]})
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    source = open_dataset(tmp_path)

    with pytest.raises(DataError, match="cannot be decoded"):
        source.read(source.items("train")[0])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_rgb_mask_is_refused_by_read(tmp_path: Path) -> None:
    stem, image, _ = make_pairs(1)[0]
    rgb = io.BytesIO()
    Image.new("RGB", (32, 24)).save(rgb, format="PNG")
    write_folder(tmp_path, {"train": [(stem, image, rgb.getvalue())]})
    source = open_dataset(tmp_path)
    with pytest.raises(DataError, match="mode RGB"):
        source.read(source.items("train")[0])
