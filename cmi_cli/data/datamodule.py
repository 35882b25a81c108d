"""The LightningDataModule that feeds training and validation from a FoodSeg103 dataset.

Imports torch and Lightning at module level: only training code imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from cmi_cli.data.config import AugmentConfig, DataConfig
from cmi_cli.data.dataset import SegmentationDataset
from cmi_cli.data.layout import DatasetSource, default_val_split, open_dataset
from cmi_cli.data.transforms import EvalTransform, TrainTransform
from cmi_cli.errors import DataError

__all__ = ["AugmentConfig", "DataConfig", "SegmentationDataModule"]

_GET_DATA = "run `cmi data sample` for the embedded sample, or `cmi init` for a new project"


class SegmentationDataModule(L.LightningDataModule):
    """Train, validation and test loaders over one dataset root, as the config describes.

    Args:
        cfg: The data config.
        project_root: Folder a relative ``cfg.root`` is resolved against (default: cwd).
    """

    def __init__(self, cfg: DataConfig, project_root: Path | None = None):
        super().__init__()
        self.cfg = cfg
        root = Path(cfg.root).expanduser()
        self.root = root if root.is_absolute() else (project_root or Path.cwd()) / root
        self._source: DatasetSource | None = None
        self.train_set: SegmentationDataset | None = None
        self.val_set: SegmentationDataset | None = None
        self.test_set: SegmentationDataset | None = None

    @property
    def source(self) -> DatasetSource:
        """The opened dataset (opened on first use)."""
        if self._source is None:
            self._source = open_dataset(self.root)
        return self._source

    @property
    def val_split(self) -> str:
        """The split used for validation (the config's, or the layout's default)."""
        return self.cfg.val_split or default_val_split(self.source)

    @property
    def test_split(self) -> str:
        """The split used for testing: ``test`` when present, else the validation split."""
        return "test" if "test" in self.source.splits() else self.val_split

    @property
    def class_names(self) -> list[str]:
        """The dataset's class names, indexed by id."""
        return list(self.source.class_names)

    @property
    def num_classes(self) -> int:
        """The number of classes the model predicts."""
        return self.cfg.num_classes

    @property
    def preprocessing(self) -> dict[str, Any]:
        """How an RGB photo becomes model input, recorded in checkpoints and ONNX metadata."""
        return {
            "image_size": self.cfg.image_size,
            "resize": "bilinear",
            "channel_order": "RGB",
            "input_layout": "NCHW",
            "scale": 1 / 255,
            "mean": list(self.cfg.mean),
            "std": list(self.cfg.std),
            "mask_resize": "nearest",
        }

    def setup(self, stage: str | None = None) -> None:
        """Open the dataset, check it against the config and build the three datasets.

        Raises:
            DataError: If the dataset is missing, lacks a split, is empty, has another class
                count than ``cfg.num_classes``, or has fewer training pairs than a batch.
        """
        if self.train_set is not None:
            return
        cfg, source = self.cfg, self._open()
        found = len(source.class_names)
        if found != cfg.num_classes:
            raise DataError(
                f"dataset {self.root} has {found} classes but data.num_classes is "
                f"{cfg.num_classes}",
                hint=f"set data.num_classes={found}, or fix the dataset's class list",
            )
        augment = cfg.augment
        train_tf = TrainTransform(
            cfg.image_size, cfg.mean, cfg.std, augment.hflip, augment.scale, augment.color_jitter
        )
        eval_tf = EvalTransform(cfg.image_size, cfg.mean, cfg.std)
        self.train_set = self._dataset(cfg.train_split, train_tf)
        self.val_set = self._dataset(self.val_split, eval_tf)
        self.test_set = (
            self.val_set
            if self.test_split == self.val_split
            else self._dataset(self.test_split, eval_tf)
        )
        if cfg.batch_size > len(self.train_set):
            raise DataError(
                f"data.batch_size is {cfg.batch_size} but split {cfg.train_split!r} of "
                f"{self.root} has only {len(self.train_set)} pairs",
                hint=f"set data.batch_size to at most {len(self.train_set)}",
            )

    def _open(self) -> DatasetSource:
        source = self.source
        present = source.splits()
        for split in (self.cfg.train_split, self.val_split):
            if split not in present:
                raise DataError(
                    f"dataset {self.root} has no {split!r} split (it has: "
                    f"{', '.join(present) or 'none'})",
                    hint="set data.train_split / data.val_split to one of those",
                )
        return source

    def _dataset(self, split: str, transform: Any) -> SegmentationDataset:
        dataset = SegmentationDataset(self.source, split, transform, limit=self.cfg.limit)
        if not len(dataset):
            raise DataError(
                f"split {split!r} of {self.root} has no image/mask pairs", hint=_GET_DATA
            )
        return dataset

    def _loader(self, dataset: SegmentationDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        cfg = self.cfg
        extra: dict[str, Any] = {}
        if cfg.num_workers > 0:
            extra["persistent_workers"] = cfg.persistent_workers
            if cfg.prefetch_factor is not None:
                extra["prefetch_factor"] = cfg.prefetch_factor
        if not train and _world_size() > 1:
            # Each rank scores a disjoint share with no padded duplicates, so the confusion
            # matrix summed over ranks equals a single-process evaluation.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            extra["sampler"] = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=train,
            # Dropping the ragged last batch keeps batch-norm statistics sane, but a set of
            # exactly one batch must keep it or an epoch would be empty.
            drop_last=train and len(dataset) > cfg.batch_size,
            num_workers=cfg.num_workers,
            pin_memory=cfg.pin_memory,
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of augmented pairs."""
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches of resized pairs, in dataset order."""
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches of resized pairs (the test split, else the validation split)."""
        return self._loader(self.test_set, train=False)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
