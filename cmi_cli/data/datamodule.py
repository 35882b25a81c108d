"""The LightningDataModule that feeds training and validation from a FoodSeg103 dataset.

Imports torch and Lightning at module level: only training code imports this module.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from cmi_cli.data.batch_transforms import BatchAugment, BatchPreprocess
from cmi_cli.data.cache import PackedCache, default_cache_dir, find_cache
from cmi_cli.data.config import AugmentConfig, DataConfig, LoaderSettings, resolve_loader_settings
from cmi_cli.data.dataset import SegmentationDataset
from cmi_cli.data.layout import DatasetSource, open_dataset
from cmi_cli.data.split import CarvedSource, ValidationCarve, default_test_split
from cmi_cli.errors import DataError

__all__ = ["AugmentConfig", "DataConfig", "SegmentationDataModule"]

log = logging.getLogger(__name__)

_GET_DATA = "run `cmi data sample` for the embedded sample, or `cmi init` for a new project"


class SegmentationDataModule(L.LightningDataModule):
    """Train, validation and test loaders over one dataset root, as the config describes.

    Loaders yield uint8 pairs squashed to ``cfg.image_size``; with ``cfg.cache: auto`` they
    come from the packed cache of ``cmi data prepare`` when one matches the data and the size,
    bit-identical to decoded ones. Once a batch is on the training device,
    :meth:`on_after_batch_transfer` augments it (training only) and normalises it, so the
    same seed gives the same batches from the cache or the photos, on any device.

    Args:
        cfg: The data config.
        project_root: Folder relative ``cfg.root`` and ``cfg.cache_dir`` are resolved against
            (default: cwd).
    """

    def __init__(self, cfg: DataConfig, project_root: Path | None = None):
        super().__init__()
        self.cfg = cfg
        base = project_root or Path.cwd()
        root = Path(cfg.root).expanduser()
        self.root = root if root.is_absolute() else base / root
        cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
        self.cache_dir = (
            default_cache_dir(self.root)
            if cache_dir is None
            else cache_dir
            if cache_dir.is_absolute()
            else base / cache_dir
        )
        self.cache: PackedCache | None = None
        self._source: DatasetSource | None = None
        self.train_set: SegmentationDataset | None = None
        self.val_set: SegmentationDataset | None = None
        self.test_set: SegmentationDataset | None = None

    @property
    def source(self) -> DatasetSource:
        """The opened dataset (opened on first use), with validation carved out of training.

        With ``val_split: null`` (the default) the training split is divided by a stable hash
        of file names (see :mod:`cmi_cli.data.split`), so neither validation nor test pairs
        are ever trained on and test pairs never pick a checkpoint.
        """
        if self._source is None:
            stored = open_dataset(self.root)
            if self.cfg.val_split is None and self.cfg.train_split in stored.splits():
                self._source = CarvedSource(stored, self.cfg.val_fraction, self.cfg.train_split)
            else:
                self._source = stored
        return self._source

    @property
    def val_split(self) -> str:
        """The split used for validation: the carved one (``val``), or the configured one."""
        source = self.source
        if isinstance(source, CarvedSource):
            return source.val_name
        return self.cfg.val_split or "val"

    @property
    def test_split(self) -> str:
        """The held-out test split (the config's, or ``test`` / the parquet ``validation``)."""
        return self.cfg.test_split or default_test_split(self.source)

    @property
    def validation_carve(self) -> ValidationCarve | None:
        """What was carved out of training for validation, or ``None`` with a stored split."""
        source = self.source
        return source.carve() if isinstance(source, CarvedSource) else None

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
        if cfg.cache == "auto":
            self.cache = find_cache(self.root, cfg.image_size, self.cache_dir)
            if self.cache is not None:
                log.info("reading pairs from the packed cache %s", self.cache.path)
        self.train_set = self._dataset(cfg.train_split)
        self.val_set = self._dataset(self.val_split)
        # Test pairs are loaded only for an explicit test step, and never stand in for
        # validation: a dataset without a test split simply has no test loader.
        self.test_set = (
            self._dataset(self.test_split) if self.test_split in source.splits() else None
        )
        overlap = {i.key for i in self.val_set.items} & {i.key for i in self.train_set.items}
        if self.test_set is not None:
            overlap |= {i.key for i in self.test_set.items} & (
                {i.key for i in self.train_set.items} | {i.key for i in self.val_set.items}
            )
        if overlap:
            raise DataError(
                f"splits of {self.root} share {len(overlap)} pairs (e.g. {sorted(overlap)[0]})",
                hint="train, validation and test must not overlap; check data.*_split",
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

    def _dataset(self, split: str) -> SegmentationDataset:
        packed = None
        # A carved split reads from the cache of the stored split its pairs came from.
        stored = {item.split for item in self.source.items(split)}
        if self.cache is not None and len(stored) == 1 and stored <= set(self.cache.splits):
            packed = self.cache.split(stored.pop())
        size, limit = self.cfg.image_size, self.cfg.limit
        try:
            dataset = SegmentationDataset(self.source, split, size, limit=limit, cache=packed)
        except ValueError:
            log.warning("the packed cache %s is out of date; decoding the files", self.cache_dir)
            dataset = SegmentationDataset(self.source, split, size, limit=limit)
        if not len(dataset):
            raise DataError(
                f"split {split!r} of {self.root} has no image/mask pairs", hint=_GET_DATA
            )
        return dataset

    @cached_property
    def batch_preprocess(self) -> BatchPreprocess:
        """The per-batch augmentation and normalisation this config asks for."""
        aug, cfg = self.cfg.augment, self.cfg
        augment = BatchAugment(aug.hflip, aug.scale, aug.color_jitter)
        return BatchPreprocess(cfg.mean, cfg.std, augment)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment (while training) and normalise a batch on its device.

        Lightning calls this for every batch of ``fit``, ``validate`` and ``test``; code that
        iterates a loader itself calls ``batch_preprocess(batch, train=...)``.
        """
        trainer = self.trainer
        return self.batch_preprocess(batch, train=bool(trainer is not None and trainer.training))

    def loader_settings(self) -> LoaderSettings:
        """The DataLoader settings for this machine, ``auto`` values resolved.

        CUDA counts when a Trainer using it is attached, or, with no Trainer, when present.
        """
        trainer = self.trainer
        if trainer is not None:
            cuda = trainer.strategy.root_device.type == "cuda"
            ranks = max(1, int(getattr(trainer, "num_devices", 1)))
        else:
            cuda, ranks = torch.cuda.is_available(), 1
        return resolve_loader_settings(
            self.cfg, cuda=cuda, ranks=ranks, cached=self.cache is not None
        )

    def _loader(self, dataset: SegmentationDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        cfg = self.cfg
        extra: dict[str, Any] = self.loader_settings().loader_kwargs()
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
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of uint8 pairs (augmented once on the device)."""
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches of uint8 pairs, in dataset order."""
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches of uint8 pairs (the held-out test split; never used for selection)."""
        return self._loader(self.test_set, train=False)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
