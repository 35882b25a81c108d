"""The packed cache of `cmi data prepare`: same pixels as decoding, keyed on the data and size."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.config import compose_train_config
from cmi_cli.data.cache import PackedCache, find_cache, fingerprint_data, prepare_cache
from cmi_cli.data.config import DataConfig, resolve_loader_settings
from cmi_cli.data.datamodule import SegmentationDataModule
from cmi_cli.data.dataset import SegmentationDataset
from cmi_cli.data.layout import open_dataset
from cmi_cli.data.transforms import resize_image, resize_mask
from cmi_cli.errors import ConfigError, DataError


@pytest.fixture
def root(tiny_project: Path) -> Path:
    """The tiny sample (16 photos of 48 px) inside a fresh project."""
    return tiny_project / "data" / "foodseg103"


def cache_folders(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ".cache").iterdir())


def track_with_dvc_file(root: Path, md5: str) -> None:
    """Record a DVC version for the data, as `dvc add` would."""
    doc = {"outs": [{"md5": md5, "path": root.name, "hash": "md5"}]}
    root.with_name(root.name + ".dvc").write_text(yaml.safe_dump(doc))


def test_cached_pairs_equal_decoded_and_resized_pairs_pixel_for_pixel(root: Path) -> None:
    result = prepare_cache(root, 32, show_progress=False)
    source = open_dataset(root)
    assert result.built
    assert result.cache.splits == {s: len(source.items(s)) for s in source.splits()}
    for split in source.splits():
        packed = result.cache.split(split)
        for i, item in enumerate(source.items(split)):
            image, mask = source.read(item)
            cached_image, cached_mask = packed.read(i)
            assert cached_image.dtype == cached_mask.dtype == np.uint8
            np.testing.assert_array_equal(cached_image, resize_image(image, 32, 32))
            np.testing.assert_array_equal(cached_mask, resize_mask(mask, 32, 32))


def test_samples_from_the_cache_equal_decoded_ones(root: Path) -> None:
    cache = prepare_cache(root, 32, show_progress=False).cache
    source = open_dataset(root)
    for split in source.splits():
        decoded = SegmentationDataset(source, split, 32)
        cached = SegmentationDataset(source, split, 32, cache=cache.split(split))
        assert len(decoded) == len(cached) > 0
        for i in range(len(decoded)):
            (img_a, mask_a), (img_b, mask_b) = decoded[i], cached[i]
            assert img_a.dtype == mask_a.dtype == torch.uint8
            assert img_a.shape == (32, 32, 3)
            assert torch.equal(img_a, img_b)
            assert torch.equal(mask_a, mask_b)


def test_a_cache_of_another_size_is_refused(root: Path) -> None:
    cache = prepare_cache(root, 32, show_progress=False).cache
    with pytest.raises(ValueError, match="32 px"):
        SegmentationDataset(open_dataset(root), "train", 40, cache=cache.split("train"))


def test_training_batches_match_decoding_for_the_same_seed(root: Path, tiny_project: Path) -> None:
    prepare_cache(root, 32, show_progress=False)

    def batches(cache: str, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg = DataConfig.from_mapping({"image_size": 32, "batch_size": 4, "cache": cache})
        dm = SegmentationDataModule(cfg, project_root=tiny_project)
        dm.setup("fit")
        assert (dm.cache is not None) == (cache == "auto")
        assert dm.train_set is not None
        loader = torch.utils.data.DataLoader(dm.train_set, batch_size=4)
        generator = torch.Generator().manual_seed(seed)
        return [dm.batch_preprocess(b, train=True, generator=generator) for b in loader]

    decoded, cached = batches("off", 7), batches("auto", 7)
    for (img_a, mask_a), (img_b, mask_b) in zip(decoded, cached, strict=True):
        assert torch.equal(img_a, img_b)
        assert torch.equal(mask_a, mask_b)
    assert not torch.equal(batches("auto", 8)[0][0], cached[0][0])  # the draw still varies


def test_datamodule_reads_the_cache_only_at_its_size(root: Path, tiny_project: Path) -> None:
    def module(**kw: object) -> SegmentationDataModule:
        cfg = DataConfig.from_mapping({"image_size": 32, "batch_size": 4, **kw})
        dm = SegmentationDataModule(cfg, project_root=tiny_project)
        dm.setup("fit")
        return dm

    assert module().cache is None
    prepare_cache(root, 32, show_progress=False)
    dm = module()
    assert dm.cache is not None
    assert dm.train_set is not None
    assert dm.train_set.cache is not None
    assert dm.val_set is not None
    assert dm.val_set.cache is not None
    assert module(cache="off").cache is None
    assert module(image_size=40).cache is None
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 32, 32, 3)
    assert images.dtype == masks.dtype == torch.uint8
    x, y = dm.batch_preprocess((images, masks), train=True)
    assert x.shape == (4, 3, 32, 32)
    assert x.dtype == torch.float32
    assert y.dtype == torch.int64


def test_cache_dir_can_live_outside_the_data(root: Path, tiny_project: Path) -> None:
    prepare_cache(root, 32, cache_dir=tiny_project / "scratch", show_progress=False)
    assert not (root / ".cache").exists()
    cfg = DataConfig.from_mapping({"image_size": 32, "batch_size": 4, "cache_dir": "scratch"})
    dm = SegmentationDataModule(cfg, project_root=tiny_project)
    dm.setup("fit")
    assert dm.cache is not None
    assert dm.cache.path.parent == tiny_project / "scratch"


def test_prepare_reuses_an_up_to_date_cache(root: Path) -> None:
    first = prepare_cache(root, 32, show_progress=False)
    again = prepare_cache(root, 32, show_progress=False)
    assert not again.built
    assert again.cache.path == first.cache.path
    assert prepare_cache(root, 32, force=True, show_progress=False).built


def test_cache_is_rebuilt_when_the_dvc_hash_changes(root: Path) -> None:
    track_with_dvc_file(root, "0" * 32 + ".dir")
    old = prepare_cache(root, 32, show_progress=False).cache
    other_size = prepare_cache(root, 40, show_progress=False).cache
    assert old.key == "0" * 32 + "-32"
    assert old.index["dvc_md5"] == "0" * 32 + ".dir"
    track_with_dvc_file(root, "1" * 32 + ".dir")
    assert find_cache(root, 32) is None
    new = prepare_cache(root, 32, show_progress=False)
    assert new.built
    assert new.cache.key == "1" * 32 + "-32"
    # The stale cache of the same size is removed; caches of other sizes are kept.
    assert new.removed == [old.path]
    assert cache_folders(root) == sorted([new.cache.key, other_size.key])


def test_an_edit_not_yet_added_to_dvc_makes_the_cache_stale(root: Path) -> None:
    track_with_dvc_file(root, "2" * 32 + ".dir")
    prepare_cache(root, 32, show_progress=False)
    assert find_cache(root, 32) is not None
    photo = next((root / "Images" / "img_dir" / "train").iterdir())
    with photo.open("ab") as f:
        f.write(b"\0")  # trailing bytes: still a valid JPEG, a different file
    assert find_cache(root, 32) is None


def test_without_dvc_the_key_follows_file_names_sizes_and_mtimes(root: Path) -> None:
    before = fingerprint_data(root)
    assert before.dvc_md5 is None
    assert before.version.startswith("fp-")
    prepare_cache(root, 32, show_progress=False)
    assert fingerprint_data(root) == before  # the cache folder itself is not data
    mask = next((root / "Images" / "ann_dir" / "test").iterdir())
    os.utime(mask, ns=(0, 0))
    assert fingerprint_data(root).version != before.version
    assert find_cache(root, 32) is None


def test_a_failed_build_leaves_no_cache_behind(root: Path) -> None:
    photo = sorted((root / "Images" / "img_dir" / "test").iterdir())[-1]
    photo.write_bytes(photo.read_bytes()[:100])  # truncated JPEG
    with pytest.raises(DataError, match="cannot be decoded"):
        prepare_cache(root, 32, show_progress=False)
    assert cache_folders(root) == []
    assert find_cache(root, 32) is None


def test_a_damaged_cache_is_not_used(root: Path) -> None:
    cache = prepare_cache(root, 32, show_progress=False).cache
    images = cache.split("train").image_path
    images.write_bytes(images.read_bytes()[:-10])
    assert find_cache(root, 32) is None
    assert prepare_cache(root, 32, show_progress=False).built


def test_a_packed_split_pickles_without_its_arrays(root: Path) -> None:
    packed = prepare_cache(root, 32, show_progress=False).cache.split("train")
    expected = packed.read(3)
    blob = pickle.dumps(packed)
    assert len(blob) < 4096  # paths and keys, not the 32x32 images
    restored = pickle.loads(blob)
    for a, b in zip(restored.read(3), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cli_prepare_reports_what_it_built(tiny_project: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["data", "prepare", "data/foodseg103", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "packed 16 pairs" in result.output
    assert "32x32" in result.output
    assert "data.image_size=32" in result.output
    again = runner.invoke(app, ["data", "prepare", "data/foodseg103", "--size", "32"])
    assert again.exit_code == 0
    assert "up to date" in again.output
    default = runner.invoke(app, ["data", "prepare"])  # size: data.image_size of the config
    assert default.exit_code == 0, default.output
    size = compose_train_config([], project_root=tiny_project).data.image_size
    assert isinstance(find_cache(tiny_project / "data" / "foodseg103", size), PackedCache)
    bad = runner.invoke(app, ["data", "prepare", "nowhere"])
    assert bad.exit_code == 1
    assert "dataset folder not found" in bad.output


def test_loader_settings_resolve_auto_per_device() -> None:
    auto = DataConfig()
    gpu = resolve_loader_settings(auto, cuda=True, cpu_count=16)
    assert (gpu.num_workers, gpu.pin_memory, gpu.persistent_workers) == (8, True, True)
    assert resolve_loader_settings(auto, cuda=True, cpu_count=16, ranks=4).num_workers == 3
    small = resolve_loader_settings(auto, cuda=False, cpu_count=2)
    assert (small.num_workers, small.pin_memory, small.persistent_workers) == (0, False, False)
    assert small.loader_kwargs() == {"num_workers": 0, "pin_memory": False}
    assert resolve_loader_settings(auto, cuda=False, cpu_count=16).num_workers == 2
    # Reading the cache is cheaper than handing batches between processes.
    assert resolve_loader_settings(auto, cuda=True, cpu_count=16, cached=True).num_workers == 2
    assert resolve_loader_settings(auto, cuda=False, cpu_count=16, cached=True).num_workers == 0
    explicit = DataConfig(num_workers=3, pin_memory=False, persistent_workers=False)
    settings = resolve_loader_settings(explicit, cuda=True, cpu_count=16)
    assert (settings.num_workers, settings.pin_memory, settings.persistent_workers) == (
        3,
        False,
        False,
    )
    with pytest.raises(ConfigError, match="num_workers"):
        DataConfig.from_mapping({"num_workers": "many"})
    with pytest.raises(ConfigError, match="cache"):
        DataConfig.from_mapping({"cache": "sometimes"})
    assert DataConfig.from_mapping({"cache": False}).cache == "off"


def test_project_template_prepares_the_cache_and_dvc_ignores_it() -> None:
    project = resources.files("cmi_cli") / "resources" / "project"
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert stages["prepare"] == {
        "cmd": "cmi data prepare data/foodseg103 --size ${data.image_size}",
        "deps": ["data/foodseg103"],
    }
    assert {"validate", "stats", "train", "evaluate"} <= set(stages)
    assert ".cache/" in (project / "dvcignore").read_text().splitlines()
    assert ".cache/" in (project / "gitignore").read_text().splitlines()


@pytest.mark.slow
def test_dvc_repro_prepare_builds_the_cache_training_reads(tmp_path: Path) -> None:
    from cmi_cli.project import init_project

    project = tmp_path / "proj"
    init_project(project, sample_images=12, sample_size=48, show_progress=False)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["image_size"] = 32
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    repro = dvc("repro", "prepare")
    assert repro.returncode == 0, repro.stdout + repro.stderr
    root = project / "data" / "foodseg103"
    cache = find_cache(root, 32)
    assert cache is not None
    md5 = yaml.safe_load((project / "data" / "foodseg103.dvc").read_text())["outs"][0]["md5"]
    assert cache.key == f"{md5.removesuffix('.dir')}-32"
    status = dvc("status", "prepare", "data/foodseg103.dvc")
    assert status.returncode == 0, status.stderr
    assert "changed" not in status.stdout, status.stdout
    index = json.loads((cache.path / "index.json").read_text())
    assert index["dvc_md5"] == md5
