"""The validation split carved out of train: disjoint, stable, order-free, cached, recorded."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
from _make import make_pairs, write_folder, write_parquet

from cmi_cli.data.cache import prepare_cache
from cmi_cli.data.config import DataConfig
from cmi_cli.data.layout import Item, open_dataset
from cmi_cli.data.split import (
    CarvedSource,
    carve_validation,
    open_split,
    parse_val_split,
    val_count,
)
from cmi_cli.data.stats import compute_stats
from cmi_cli.errors import ConfigError, DataError


def _items(n: int) -> list[Item]:
    return [Item(f"train/{i:05d}", "train", None, None) for i in range(n)]


def test_validation_and_train_never_share_a_pair_and_cover_train() -> None:
    items = _items(500)
    train, val = carve_validation(items, 0.1)
    assert len(val) == 50
    assert len(train) == 450
    assert not {i.key for i in train} & {i.key for i in val}
    assert {i.key for i in train} | {i.key for i in val} == {i.key for i in items}


def test_choice_is_stable_and_ignores_listing_order() -> None:
    items = _items(200)
    shuffled = list(items)
    random.Random(3).shuffle(shuffled)
    _, first = carve_validation(items, 0.2)
    _, again = carve_validation(items, 0.2)
    _, other_order = carve_validation(shuffled, 0.2)
    assert [i.key for i in first] == [i.key for i in again]
    assert {i.key for i in first} == {i.key for i in other_order}


def test_choice_is_the_smallest_sha1_of_names_not_pythons_hash() -> None:
    # The rule written out: the same on any machine, whatever PYTHONHASHSEED is.
    items = _items(40)
    _, val = carve_validation(items, 0.1)
    expected = sorted(items, key=lambda i: hashlib.sha1(i.key.encode()).hexdigest())[:4]
    assert {i.key for i in val} == {i.key for i in expected}


def test_small_train_splits_still_get_a_few_validation_pairs() -> None:
    assert val_count(12, 0.1) == 3
    assert val_count(2, 0.1) == 1
    assert val_count(4, 0.1) == 1
    assert val_count(9, 0.1) == 2
    assert val_count(4983, 0.1) == 498
    train, val = carve_validation(_items(12), 0.1)
    assert len(val) == 3
    assert len(train) == 9


@pytest.mark.parametrize("bad", [0, -0.1, 0.7, "x", True])
def test_bad_fractions_are_named_errors(bad: object) -> None:
    with pytest.raises(DataError, match="validation fraction"):
        carve_validation(_items(10), bad)  # type: ignore[arg-type]
    if not isinstance(bad, (str, bool)):
        with pytest.raises(ConfigError, match="val_fraction"):
            DataConfig(val_fraction=bad)  # type: ignore[arg-type]


def test_split_names_carry_the_fraction() -> None:
    assert parse_val_split("val") == 0.1
    assert parse_val_split("val@0.25") == 0.25
    assert parse_val_split("test") is None
    with pytest.raises(DataError, match="not a fraction"):
        parse_val_split("val@abc")


def test_folder_and_parquet_layouts_carve_the_same_photos(tmp_path: Path) -> None:
    pairs = make_pairs(30, prefix="")
    folder = write_folder(tmp_path / "folder", {"train": pairs, "test": pairs[:3]})
    # The export in another row order: the choice follows the stored file names.
    shuffled = list(pairs)
    random.Random(1).shuffle(shuffled)
    parquet = write_parquet(tmp_path / "parquet", {"train": shuffled, "validation": pairs[:3]})
    carved_folder = CarvedSource(open_dataset(folder), 0.2)
    carved_parquet = CarvedSource(open_dataset(parquet), 0.2)
    assert carved_folder.splits() == ["train", "val@0.2", "test"]
    assert carved_parquet.splits() == ["train", "val@0.2", "validation"]
    a, b = carved_folder.carve(), carved_parquet.carve()
    assert (
        (a.count, a.train_count, a.digest)
        == (b.count, b.train_count, b.digest)
        == (6, 24, a.digest)
    )
    folder_images = [carved_folder.read(i)[1].tobytes() for i in carved_folder.items("val@0.2")]
    parquet_images = [carved_parquet.read(i)[1].tobytes() for i in carved_parquet.items("val@0.2")]
    assert sorted(folder_images) == sorted(parquet_images)


def test_open_split_rebuilds_the_carved_split_from_its_name(tiny_sample_master: Path) -> None:
    source, name = open_split(tiny_sample_master, "val")
    assert name == "val"
    assert len(source.items("val")) == 3
    assert {i.split for i in source.items("val")} == {"train"}
    stored, test = open_split(tiny_sample_master, None)
    assert test == "test"
    assert not isinstance(stored, CarvedSource)


def test_datamodule_trains_without_validation_pairs_and_tests_on_test(tiny_project: Path) -> None:
    from cmi_cli.data.datamodule import SegmentationDataModule

    dm = SegmentationDataModule(DataConfig(image_size=32, batch_size=2, cache="off"))
    dm.setup("fit")
    assert dm.val_split == "val"
    assert dm.test_split == "test"
    assert dm.train_set is not None
    assert dm.val_set is not None
    assert dm.test_set is not None
    train = {i.key for i in dm.train_set.items}
    val = {i.key for i in dm.val_set.items}
    assert len(val) == 3
    assert len(train) == 9
    assert not train & val
    assert all(k.startswith("train/") for k in val)
    assert all(i.key.startswith("test/") for i in dm.test_set.items)
    carve = dm.validation_carve
    assert carve is not None
    assert carve.count == 3


def test_carved_split_reads_from_the_packed_cache_of_train(tiny_project: Path) -> None:
    import numpy as np

    from cmi_cli.data.datamodule import SegmentationDataModule

    root = tiny_project / "data" / "foodseg103"
    prepare_cache(root, 32, show_progress=False)
    cached = SegmentationDataModule(DataConfig(image_size=32, batch_size=2))
    cached.setup("fit")
    decoded = SegmentationDataModule(DataConfig(image_size=32, batch_size=2, cache="off"))
    decoded.setup("fit")
    assert cached.val_set is not None
    assert cached.val_set.cache is not None
    assert decoded.val_set is not None
    assert decoded.val_set.cache is None
    assert [i.key for i in cached.val_set.items] == [i.key for i in decoded.val_set.items]
    for i in range(len(decoded.val_set)):
        for a, b in zip(cached.val_set.read(i), decoded.val_set.read(i), strict=True):
            np.testing.assert_array_equal(a, b)


def test_stats_describe_the_carve(tiny_sample_master: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cmi_cli.cli.app import app

    stats = compute_stats(tiny_sample_master, show_progress=False)
    assert stats.images == {"train": 12, "test": 4}
    assert stats.validation is not None
    assert stats.validation["count"] == 3
    assert stats.validation["fraction"] == 0.1
    root = shutil.copytree(tiny_sample_master, tmp_path / "data")
    result = CliRunner().invoke(app, ["data", "stats", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "Validation: 3 of 12 train images" in " ".join(result.output.split())
    saved = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert saved["validation"]["names_sha1"] == stats.validation["names_sha1"]
