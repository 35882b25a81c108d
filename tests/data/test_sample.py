from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmi_cli.classes import foodseg103_class_names, load_class_names
from cmi_cli.data.sample import (
    SAMPLE_CLASS_IDS,
    class_models,
    generate_sample,
    sample_class_ids,
)
from cmi_cli.errors import DataError, UsageError


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    images = sorted((root / "Images" / "img_dir" / split).glob("*.jpg"))
    return [(p, root / "Images" / "ann_dir" / split / f"{p.stem}.png") for p in images]


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample") / "ds"
    generate_sample(root, images=12, size=64, seed=3, show_progress=False)
    return root


def test_layout_and_file_formats(small_sample: Path) -> None:
    assert sorted(p.name for p in small_sample.iterdir()) == ["Images", "category_id.txt"]
    stems = []
    for split in ("train", "test"):
        pairs = _pairs(small_sample, split)
        assert pairs
        anns = sorted((small_sample / "Images" / "ann_dir" / split).iterdir())
        assert [a for _, a in pairs] == anns
        for img_path, ann_path in pairs:
            stems.append(img_path.stem)
            with Image.open(img_path) as img, Image.open(ann_path) as ann:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 64))
                assert (ann.format, ann.mode, ann.size) == ("PNG", "L", (64, 64))
    assert sorted(stems) == [f"{i:05d}" for i in range(12)]


def test_category_file_is_the_official_list(small_sample: Path) -> None:
    text = (small_sample / "category_id.txt").read_text("utf-8")
    assert text.splitlines()[1] == "1\tcandy"
    assert tuple(load_class_names(small_sample)) == foodseg103_class_names()


def test_masks_hold_background_and_one_to_five_sample_classes(small_sample: Path) -> None:
    allowed = set(SAMPLE_CLASS_IDS)
    for split in ("train", "test"):
        for _, ann_path in _pairs(small_sample, split):
            ids = set(np.unique(np.asarray(Image.open(ann_path))).tolist())
            food = ids - {0}
            assert 0 in ids
            assert food <= allowed
            assert 1 <= len(food) <= 5


def test_split_counts_follow_test_fraction(tmp_path: Path) -> None:
    summary = generate_sample(
        tmp_path / "ds", images=10, size=32, test_fraction=0.3, show_progress=False
    )
    assert summary.counts == {"train": 7, "test": 3}
    assert len(_pairs(summary.root, "train")) == 7
    assert len(_pairs(summary.root, "test")) == 3
    # Both splits keep at least one image even when the fraction rounds to nothing.
    tiny = generate_sample(
        tmp_path / "tiny", images=2, size=32, test_fraction=0.01, show_progress=False
    )
    assert tiny.counts == {"train": 1, "test": 1}


def test_summary_describes_the_sample(tmp_path: Path) -> None:
    summary = generate_sample(tmp_path / "ds", images=4, size=48, seed=9, show_progress=False)
    assert summary.root == tmp_path / "ds"
    assert (summary.size, summary.seed) == (48, 9)
    assert summary.class_ids == SAMPLE_CLASS_IDS == sample_class_ids(12)
    assert len(SAMPLE_CLASS_IDS) == 12


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    a = generate_sample(tmp_path / "a", images=6, size=48, seed=5, show_progress=False)
    b = generate_sample(tmp_path / "b", images=6, size=48, seed=5, show_progress=False)
    files_a, files_b = _files(a.root), _files(b.root)
    assert len(files_a) == 6 * 2 + 1
    assert files_a == files_b


def test_image_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    few = generate_sample(
        tmp_path / "few", images=4, size=48, test_fraction=0.5, show_progress=False
    )
    more = generate_sample(
        tmp_path / "more", images=8, size=48, test_fraction=0.5, show_progress=False
    )
    # Image 00001 is in train for both; 00002 moves from test to train but keeps its pixels.
    first = few.root / "Images" / "img_dir" / "train" / "00001.jpg"
    assert (
        first.read_bytes()
        == (more.root / "Images" / "img_dir" / "train" / "00001.jpg").read_bytes()
    )
    moved = few.root / "Images" / "ann_dir" / "test" / "00002.png"
    assert (
        moved.read_bytes()
        == (more.root / "Images" / "ann_dir" / "train" / "00002.png").read_bytes()
    )


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    a = _files(generate_sample(tmp_path / "a", images=4, size=48, seed=1, show_progress=False).root)
    b = _files(generate_sample(tmp_path / "b", images=4, size=48, seed=2, show_progress=False).root)
    images = [k for k in a if k.endswith((".jpg", ".png"))]
    assert all(a[k] != b[k] for k in images)


def test_all_food_classes_can_be_drawn(tmp_path: Path) -> None:
    models = class_models()
    assert sorted(models) == list(range(1, 104))
    assert {m.name for m in models.values()} == set(foodseg103_class_names()[1:])
    summary = generate_sample(
        tmp_path / "ds", images=40, size=32, num_food_classes=103, show_progress=False
    )
    assert summary.class_ids == tuple(range(1, 104))
    seen: set[int] = set()
    for split in ("train", "test"):
        for _, ann in _pairs(summary.root, split):
            seen |= set(np.unique(np.asarray(Image.open(ann))).tolist())
    assert seen <= set(range(104))
    assert len(seen - {0, *SAMPLE_CLASS_IDS}) > 12  # classes beyond the default twelve appear


def test_fewer_classes_take_a_subset_of_the_default(tmp_path: Path) -> None:
    ids = sample_class_ids(3)
    assert len(ids) == 3
    assert set(ids) <= set(SAMPLE_CLASS_IDS)
    summary = generate_sample(
        tmp_path / "ds", images=6, size=32, num_food_classes=3, show_progress=False
    )
    for split in ("train", "test"):
        for _, ann in _pairs(summary.root, split):
            assert set(np.unique(np.asarray(Image.open(ann))).tolist()) <= {0, *ids}


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"images": 1}, "--images"),
        ({"size": 16}, "--size"),
        ({"test_fraction": 0.0}, "--test-fraction"),
        ({"test_fraction": 1.0}, "--test-fraction"),
        ({"num_food_classes": 0}, "--num-classes"),
        ({"num_food_classes": 104}, "--num-classes"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_bad_arguments_raise_usage_error(tmp_path: Path, kwargs: dict, option: str) -> None:
    with pytest.raises(UsageError, match=option) as info:
        generate_sample(tmp_path / "ds", show_progress=False, **kwargs)
    assert "\n" not in info.value.one_line()
    assert list(tmp_path.iterdir()) == []


def test_existing_non_empty_out_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty") as info:
        generate_sample(out, images=2, size=32, show_progress=False)
    assert "--overwrite" in info.value.one_line()
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]

    generate_sample(out, images=2, size=32, overwrite=True, show_progress=False)
    assert not (out / "keep.txt").exists()
    assert (out / "category_id.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_empty_existing_out_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    generate_sample(out, images=2, size=32, show_progress=False)
    assert (out / "Images" / "img_dir" / "train" / "00000.jpg").is_file()


def test_out_that_is_a_file_raises_data_error(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        generate_sample(out, images=2, size=32, overwrite=True, show_progress=False)


def test_failure_midway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cmi_cli.data.sample as sample

    calls = {"n": 0}
    real = sample.render_image

    def failing(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sample, "render_image", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_sample(tmp_path / "ds", images=4, size=32, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_colour_alone_is_well_above_chance_but_far_from_perfect(tmp_path: Path) -> None:
    # A nearest-centroid classifier on RGB, fitted on train food pixels and scored on test food
    # pixels. Measured: 0.40 here (majority class 0.07; 0.63 at 96 images of 256 px); chance
    # is 1/12. Texture and shape must carry the rest.
    root = generate_sample(tmp_path / "ds", images=48, size=64, seed=0, show_progress=False).root

    def food_pixels(split: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for img_path, ann_path in _pairs(root, split):
            img = np.asarray(Image.open(img_path), np.float32)
            ann = np.asarray(Image.open(ann_path))
            xs.append(img[ann > 0])
            ys.append(ann[ann > 0])
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = food_pixels("train")
    x_test, y_test = food_pixels("test")
    ids = np.unique(y_train)
    assert len(ids) == 12
    centroids = np.stack([x_train[y_train == c].mean(0) for c in ids])
    pred = ids[np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    accuracy = float((pred == y_test).mean())
    majority = float((y_test == np.bincount(y_train).argmax()).mean())
    assert accuracy > max(0.3, majority + 0.15)
    assert accuracy < 0.75
