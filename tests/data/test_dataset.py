from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from _make import make_pairs, write_folder, write_parquet

from cmi_cli.data.config import AugmentConfig, DataConfig
from cmi_cli.data.datamodule import SegmentationDataModule
from cmi_cli.data.dataset import SegmentationDataset
from cmi_cli.data.layout import open_dataset
from cmi_cli.data.transforms import EvalTransform
from cmi_cli.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NAMES = [f"class{i}" for i in range(6)]


@pytest.fixture
def both_layouts(tmp_path: Path) -> tuple[Path, Path]:
    """The same encoded pairs written as a folder dataset and as a parquet export."""
    train, val = make_pairs(4, size=(30, 40), seed=1), make_pairs(2, size=(30, 40), seed=2)
    folder = write_folder(tmp_path / "folder", {"train": train, "test": val}, names=NAMES)
    parquet = write_parquet(tmp_path / "parquet", {"train": train, "validation": val})
    (parquet / "category_id.txt").write_bytes((folder / "category_id.txt").read_bytes())
    return folder, parquet


def small_config(root: Path, **kw: object) -> DataConfig:
    values: dict[str, object] = {
        "root": str(root),
        "image_size": 16,
        "num_classes": 6,
        "batch_size": 2,
    }
    values.update(kw)
    return DataConfig.from_mapping(values)


def test_both_layouts_give_identical_tensors(both_layouts: tuple[Path, Path]) -> None:
    a, b = (SegmentationDataset(open_dataset(p), "train", 24) for p in both_layouts)
    assert len(a) == len(b) == 4
    for i in range(len(a)):
        (img_a, mask_a), (img_b, mask_b) = a[i], b[i]
        assert torch.equal(img_a, img_b)
        assert torch.equal(mask_a, mask_b)


def test_samples_are_uint8_squares_of_the_image_size(both_layouts: tuple[Path, Path]) -> None:
    dataset = SegmentationDataset(open_dataset(both_layouts[0]), "train", 20, limit=3)
    assert len(dataset) == 3
    image, mask = dataset[0]
    assert image.shape == (20, 20, 3)
    assert mask.shape == (20, 20)
    assert image.dtype == mask.dtype == torch.uint8
    image[0, 0, 0] = 1  # writable: a copy, not a view of a decoder's buffer


def test_eval_transform_resizes_masks_without_inventing_ids() -> None:
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[:, 10:20], mask[:, 20:] = 3, 5
    image = np.full((30, 40, 3), 128, dtype=np.uint8)
    img, out = EvalTransform(64, MEAN, STD)(image, mask)

    assert img.shape == (3, 64, 64)
    assert out.shape == (64, 64)
    assert out.dtype == np.int64
    assert set(np.unique(out)) == {0, 3, 5}
    expected = (128 / 255 - MEAN[0]) / STD[0]
    assert img[0].mean() == pytest.approx(expected, abs=1e-5)


def test_datamodule_serves_batches_and_lineage(both_layouts: tuple[Path, Path]) -> None:
    for root in both_layouts:
        dm = SegmentationDataModule(small_config(root, batch_size=3))
        dm.setup("fit")
        images, masks = next(iter(dm.train_dataloader()))
        assert images.shape == (3, 16, 16, 3)
        assert masks.shape == (3, 16, 16)
        x, y = dm.batch_preprocess((images, masks), train=False)
        assert x.shape == (3, 3, 16, 16)
        assert y.dtype == torch.int64
        assert len(dm.train_dataloader()) == 1  # 4 pairs, batches of 3, ragged one dropped
        assert len(dm.val_dataloader()) == 1
        assert len(dm.test_dataloader()) == 1
        assert dm.num_classes == 6
        assert dm.preprocessing["image_size"] == 16
        assert dm.preprocessing["channel_order"] == "RGB"
        assert dm.class_names == NAMES


def test_datamodule_keeps_the_last_batch_when_it_is_the_only_one(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(3), "test": make_pairs(1)}, names=NAMES)
    dm = SegmentationDataModule(small_config(tmp_path, batch_size=2))
    dm.setup()
    assert len(dm.train_dataloader()) == 1


def test_datamodule_resolves_root_against_the_project(tmp_path: Path) -> None:
    write_folder(
        tmp_path / "data" / "fs", {"train": make_pairs(3), "test": make_pairs(2)}, names=NAMES
    )
    dm = SegmentationDataModule(small_config(Path("data/fs"), limit=2), project_root=tmp_path)
    dm.setup()
    assert dm.root == tmp_path / "data" / "fs"
    assert dm.train_set is not None
    assert len(dm.train_set) == 2


def test_datamodule_rejects_an_empty_dataset(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / "Images" / "img_dir" / split).mkdir(parents=True)
    dm = SegmentationDataModule(small_config(tmp_path, num_classes=104))
    with pytest.raises(DataError, match="no image/mask pairs") as err:
        dm.setup()
    assert "cmi data sample" in (err.value.hint or "")
    assert "cmi init" in (err.value.hint or "")


def test_datamodule_rejects_a_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as err:
        SegmentationDataModule(small_config(tmp_path / "nothing")).setup()
    assert "cmi data sample" in (err.value.hint or "")


def test_datamodule_rejects_a_class_count_mismatch(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(3), "test": make_pairs(1)}, names=NAMES[:3])
    with pytest.raises(DataError, match=r"has 3 classes but data\.num_classes is 6"):
        SegmentationDataModule(small_config(tmp_path)).setup()


def test_datamodule_rejects_a_batch_larger_than_the_training_set(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(3), "test": make_pairs(1)}, names=NAMES)
    # 3 pairs in train, 1 of them carved out for validation.
    with pytest.raises(DataError, match=r"batch_size is 4 but .* only 2 pairs"):
        SegmentationDataModule(small_config(tmp_path, batch_size=4)).setup()


def test_datamodule_rejects_a_missing_validation_split(tmp_path: Path) -> None:
    write_folder(tmp_path, {"train": make_pairs(3)}, names=NAMES)
    # Validation is carved out of train by default; a named split must exist.
    with pytest.raises(DataError, match="no 'validation' split"):
        SegmentationDataModule(small_config(tmp_path, val_split="validation")).setup()


def test_datamodule_feeds_a_lightning_trainer(both_layouts: tuple[Path, Path]) -> None:
    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Conv2d(3, 6, 1)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
            images, masks = batch
            # The DataModule's hook turned the uint8 batch into normalised model input.
            assert images.dtype == torch.float32
            assert images.shape == (2, 3, 16, 16)
            assert masks.dtype == torch.int64
            return torch.nn.functional.cross_entropy(self.head(images), masks, ignore_index=255)

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
            images, masks = batch
            assert images.dtype == torch.float32
            self.log("val_loss", torch.nn.functional.cross_entropy(self.head(images), masks))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), datamodule=SegmentationDataModule(small_config(both_layouts[1])))
    assert trainer.state.finished


def test_unknown_config_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match="unknown data config key 'bach_size'") as err:
        DataConfig.from_mapping({"bach_size": 4})
    assert "did you mean batch_size?" in (err.value.hint or "")
    with pytest.raises(ConfigError, match=r"'augment\.hflpi'") as nested:
        DataConfig.from_mapping({"augment": {"hflpi": False}})
    assert "augment.hflip" in (nested.value.hint or "")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", 0),
        ("image_size", 8),
        ("num_workers", -1),
        ("std", [1, 0, 1]),
        ("limit", 0),
        ("num_classes", 300),
        ("augment", {"scale": [1.5, 1.0]}),
        ("augment", {"color_jitter": 1.5}),
        ("pin_memory", "yes"),
    ],
)
def test_bad_config_values_are_rejected(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        DataConfig.from_mapping({key: value})


@pytest.mark.parametrize("name", ["sample", "foodseg103"])
def test_packaged_data_configs_hold_exactly_the_config_keys(name: str) -> None:
    mapping = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    cfg = DataConfig.from_mapping(mapping)
    assert cfg.to_dict() == mapping
    assert isinstance(cfg.augment, AugmentConfig)
    assert isinstance(cfg.mean, tuple)


@pytest.mark.slow
def test_worker_processes_read_parquet_like_the_main_process(
    both_layouts: tuple[Path, Path],
) -> None:
    cfg = small_config(
        both_layouts[1], batch_size=1, num_workers=2, persistent_workers=True, prefetch_factor=2
    )
    dm = SegmentationDataModule(cfg)
    dm.setup()
    assert dm.val_set is not None
    assert dm.test_set is not None
    in_workers = [images for images, _ in dm.test_dataloader()]
    here = [dm.test_set[i][0][None] for i in range(len(dm.test_set))]
    assert len(in_workers) == len(here) == 2
    assert all(torch.equal(a, b) for a, b in zip(in_workers, here, strict=True))
    L.seed_everything(0, workers=True, verbose=False)
    epochs = [[images for images, _ in dm.train_dataloader()] for _ in range(2)]
    assert [len(e) for e in epochs] == [3, 3]  # 4 train pairs, 1 carved out for validation
