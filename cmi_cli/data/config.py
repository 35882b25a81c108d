"""The data part of a training config: where the dataset is and how batches are made.

Kept free of torch and Lightning so the CLI can check a config before importing either.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from cmi_cli.errors import ConfigError


def _reject_unknown(cls: type, mapping: Mapping[str, Any], prefix: str) -> None:
    known = [f.name for f in fields(cls)]
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(
                f"unknown data config key '{prefix}{key}'",
                hint=f"{hint} Known keys: {', '.join(known)}".strip(),
            )


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"data.{key} must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _none_or_positive(value: Any) -> bool:
    return value is None or (_is_int(value) and value >= 1)


def _auto_or(value: Any, ok: bool) -> bool:
    return value == "auto" or ok


def _triple(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 3 and all(_is_number(v) for v in value)


@dataclass
class AugmentConfig:
    """Random changes applied to training pairs (validation pairs are only resized).

    Attributes:
        hflip: Mirror half of the pairs left to right.
        scale: Range of the random zoom before cropping or padding to ``image_size``.
        color_jitter: Strength of random brightness, contrast and saturation changes
            (0 turns them off; 0.2 means factors in [0.8, 1.2]).
    """

    hflip: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    color_jitter: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.scale, list):
            self.scale = tuple(self.scale)
        _check(isinstance(self.hflip, bool), "augment.hflip", self.hflip, "true or false")
        _check(
            isinstance(self.scale, tuple)
            and len(self.scale) == 2
            and all(_is_number(v) for v in self.scale)
            and 0 < self.scale[0] <= self.scale[1] <= 4,
            "augment.scale",
            self.scale,
            "[low, high] with 0 < low <= high <= 4",
        )
        _check(
            _is_number(self.color_jitter) and 0 <= self.color_jitter < 1,
            "augment.color_jitter",
            self.color_jitter,
            "a number in [0, 1)",
        )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> AugmentConfig:
        """Build from a plain mapping, rejecting unknown keys with a suggestion."""
        _reject_unknown(cls, mapping, "augment.")
        return cls(**dict(mapping))


@dataclass
class DataConfig:
    """Where the dataset is and how training and validation batches are made.

    Attributes:
        root: Dataset folder, relative to the project root unless absolute.
        image_size: Side of the square inputs; training crops/pads to it, validation resizes.
        num_classes: Class count the model predicts; must match the dataset's class list.
        batch_size: Pairs per batch (per device).
        num_workers: DataLoader worker processes (0 reads in the main process), or ``auto``
            (see :func:`resolve_loader_settings`).
        pin_memory: Pin host memory for faster copies to a GPU; ``auto``: only with CUDA.
        persistent_workers: Keep workers alive between epochs (only used with workers);
            ``auto``: whenever there are workers.
        prefetch_factor: Batches each worker loads ahead (only used with workers; ``null``
            keeps torch's default of 2).
        mean: Per-channel RGB mean used to normalise inputs (0..1 scale).
        std: Per-channel RGB standard deviation used to normalise inputs.
        augment: Training augmentation.
        train_split: Split to train on.
        val_split: Split that picks checkpoints, stops early and scores sweeps. ``None``
            carves ``val_fraction`` of ``train_split`` out by a stable hash of file names
            (see :mod:`cmi_cli.data.split`); a name uses that stored split as it is.
        val_fraction: Share of ``train_split`` carved out for validation when ``val_split``
            is ``None`` (at least 3 pairs), in ``(0, 0.5]``.
        test_split: The held-out test split, scored only by ``cmi evaluate`` or the optional
            final test step; ``None`` picks ``test`` (folder) or ``validation`` (the parquet
            export's name for FoodSeg103's test split).
        limit: Use only the first N pairs of each split (quick runs and tests).
        cache: ``auto`` reads the packed cache that ``cmi data prepare`` builds when one of
            ``image_size`` matches the data; ``off`` always decodes the files.
        cache_dir: Where packed caches live; ``null`` means ``ROOT/.cache``.
    """

    root: str = "data/foodseg103"
    image_size: int = 256
    num_classes: int = 104
    batch_size: int = 8
    num_workers: int | Literal["auto"] = "auto"
    pin_memory: bool | Literal["auto"] = "auto"
    persistent_workers: bool | Literal["auto"] = "auto"
    prefetch_factor: int | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train_split: str = "train"
    val_split: str | None = None
    val_fraction: float = 0.1
    test_split: str | None = None
    limit: int | None = None
    cache: Literal["auto", "off"] = "auto"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.augment, Mapping):
            self.augment = AugmentConfig.from_mapping(self.augment)
        if isinstance(self.mean, list):
            self.mean = tuple(self.mean)
        if isinstance(self.std, list):
            self.std = tuple(self.std)
        if isinstance(self.cache, bool):
            # YAML 1.1 reads a bare ``off`` as false.
            self.cache = "auto" if self.cache else "off"
        checks = [
            ("root", isinstance(self.root, str) and bool(self.root), "a path"),
            ("image_size", _is_int(self.image_size) and self.image_size >= 16, "an integer >= 16"),
            (
                "num_classes",
                _is_int(self.num_classes) and 1 <= self.num_classes <= 255,
                "an integer in 1..255 (255 marks ignored pixels)",
            ),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            (
                "num_workers",
                _auto_or(
                    self.num_workers, _is_int(self.num_workers) and int(self.num_workers) >= 0
                ),
                "auto or an integer >= 0",
            ),
            (
                "pin_memory",
                _auto_or(self.pin_memory, isinstance(self.pin_memory, bool)),
                "auto, true or false",
            ),
            (
                "persistent_workers",
                _auto_or(self.persistent_workers, isinstance(self.persistent_workers, bool)),
                "auto, true or false",
            ),
            ("prefetch_factor", _none_or_positive(self.prefetch_factor), "null or an integer >= 1"),
            ("mean", _triple(self.mean), "three numbers (R, G, B)"),
            ("std", _triple(self.std) and min(self.std) > 0, "three positive numbers (R, G, B)"),
            ("augment", isinstance(self.augment, AugmentConfig), "a mapping"),
            ("train_split", isinstance(self.train_split, str) and bool(self.train_split), "a name"),
            (
                "val_split",
                self.val_split is None
                or (isinstance(self.val_split, str) and bool(self.val_split)),
                "null or a split name",
            ),
            (
                "val_fraction",
                _is_number(self.val_fraction) and 0 < self.val_fraction <= 0.5,
                "a number in (0, 0.5]",
            ),
            (
                "test_split",
                self.test_split is None
                or (isinstance(self.test_split, str) and bool(self.test_split)),
                "null or a split name",
            ),
            ("limit", _none_or_positive(self.limit), "null or an integer >= 1"),
            ("cache", self.cache in ("auto", "off"), "auto or off"),
            (
                "cache_dir",
                self.cache_dir is None
                or (isinstance(self.cache_dir, str) and bool(self.cache_dir)),
                "null or a folder",
            ),
        ]
        for key, ok, expected in checks:
            _check(ok, key, getattr(self, key), expected)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> DataConfig:
        """Build from a plain mapping (e.g. ``OmegaConf.to_container(cfg.data)``).

        Raises:
            ConfigError: On an unknown key (with a did-you-mean suggestion) or a bad value.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"the data config must be a mapping, got {type(mapping).__name__}")
        _reject_unknown(cls, mapping, "")
        values = dict(mapping)
        if "augment" in values:
            augment = values["augment"]
            if not isinstance(augment, Mapping):
                raise ConfigError(f"data.augment must be a mapping, got {augment!r}")
            values["augment"] = AugmentConfig.from_mapping(augment)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain YAML/JSON-ready data (tuples become lists)."""

        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return list(value) if isinstance(value, tuple) else value

        result: dict[str, Any] = plain(asdict(self))
        return result


@dataclass(frozen=True)
class LoaderSettings:
    """The DataLoader settings a config resolves to on one machine.

    Attributes:
        num_workers: Worker processes.
        pin_memory: Whether batches go to pinned memory.
        persistent_workers: Whether workers outlive an epoch (false without workers).
        prefetch_factor: Batches loaded ahead per worker (``None`` without workers, or to keep
            torch's default).
    """

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None

    def loader_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments for ``torch.utils.data.DataLoader``.

        Options torch rejects without workers are left out then.
        """
        kwargs: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if self.num_workers > 0:
            kwargs["persistent_workers"] = self.persistent_workers
            if self.prefetch_factor is not None:
                kwargs["prefetch_factor"] = self.prefetch_factor
        return kwargs


def auto_num_workers(
    cuda: bool, cpu_count: int | None = None, ranks: int = 1, cached: bool = False
) -> int:
    """Return the worker count ``num_workers: auto`` means.

    A GPU waits for its batches, so it gets up to 8 workers decoding photos, keeping one core
    for the main process. On a CPU the model's own threads already use every core, and a
    worker steals one from them: none below 4 cores per process, then one per 4 cores, at
    most 2. Reading the packed cache costs less than handing a batch between processes
    (``benchmarks/data_loading.py``): a GPU gets at most 2 workers to overlap reads with its
    steps, and a CPU none.

    Args:
        cuda: Whether training runs on a CUDA device.
        cpu_count: Cores available (default: ``os.cpu_count()``).
        ranks: Training processes sharing this machine's cores.
        cached: Whether pairs come from the packed cache of ``cmi data prepare``.
    """
    cores = max(1, (cpu_count or os.cpu_count() or 1) // max(1, ranks))
    if cuda:
        return max(0, min(2 if cached else 8, cores - 1))
    return 0 if cores < 4 or cached else min(2, cores // 4)


def resolve_loader_settings(
    cfg: DataConfig,
    cuda: bool,
    cpu_count: int | None = None,
    ranks: int = 1,
    cached: bool = False,
) -> LoaderSettings:
    """Turn the config's loader keys, ``auto`` included, into concrete settings.

    Explicit values are kept; ``auto`` becomes :func:`auto_num_workers` workers, persistent
    workers whenever there are workers, and pinned memory only with CUDA.

    Args:
        cfg: The data config.
        cuda: Whether batches go to a CUDA device.
        cpu_count: Cores available (default: ``os.cpu_count()``).
        ranks: Training processes sharing this machine's cores.
        cached: Whether pairs come from the packed cache of ``cmi data prepare``.
    """
    workers = (
        auto_num_workers(cuda, cpu_count, ranks, cached)
        if cfg.num_workers == "auto"
        else int(cfg.num_workers)
    )
    persistent = workers > 0 if cfg.persistent_workers == "auto" else bool(cfg.persistent_workers)
    pin = cuda if cfg.pin_memory == "auto" else bool(cfg.pin_memory)
    return LoaderSettings(
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
    )
