"""Profile the input pipeline: images per second per worker count, hot functions, advice.

The training DataLoader is timed as training builds it (the train split as uint8 pairs), once
per worker count, from the photos and, when ``cmi data prepare`` has built one, from the packed
cache. The loaders are timed in turns, repeat after repeat, so a busy machine slows them alike.
The main process runs with one torch thread meanwhile, as DataLoader workers do: batching in
a process whose threads compete for busy cores can otherwise take 100 times longer, which
says nothing about the loader. cProfile then runs over the single-process loader to name the
functions the time goes to. The per-batch augmentation that training applies after loading, on
its device, is timed on its own.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import statistics
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from cmi_cli.data.config import DataConfig
from cmi_cli.utils.files import atomic_write_text

if TYPE_CHECKING:
    from torch.utils.data import Dataset

DEFAULT_TOP = 15
# Reading the photos above this share of the loader's time makes a packed cache worth it.
DECODE_SHARE_FOR_CACHE = 0.3


@dataclass(frozen=True)
class LoaderRate:
    """Throughput of one loader setting.

    Attributes:
        source: ``decode`` (photos) or ``cache`` (the packed cache).
        workers: DataLoader worker processes.
        images_per_s: Median over the repeats.
        runs: Images per second of each repeat.
    """

    source: str
    workers: int
    images_per_s: float
    runs: list[float]


@dataclass(frozen=True)
class Hotspot:
    """One function of the cProfile table.

    Attributes:
        function: ``file:line(name)``, the file relative to its package.
        calls: Calls (primitive calls when recursive).
        self_s: Seconds in the function itself.
        cumulative_s: Seconds including callees.
        share: ``cumulative_s`` as a share of the profiled time.
    """

    function: str
    calls: int
    self_s: float
    cumulative_s: float
    share: float


@dataclass
class DataProfile:
    """What ``cmi profile --target data`` measured and recommends.

    Attributes:
        root: The dataset folder.
        image_size: ``data.image_size``.
        batch_size: ``data.batch_size``.
        batches: Batches timed per repeat.
        cache: The packed cache folder, or ``None`` when there is none for this data and size.
        profiled_source: The source cProfile ran over (the one training would use).
        rates: Throughput per source and worker count.
        hotspots: The top functions by cumulative time.
        read_share: Share of the single-process loader's time spent reading pairs (decoding
            photos, or copying them out of the cache).
        augment_per_s: Images per second of the per-batch augmentation and normalisation
            training applies on its device, per device measured (``cpu``, ``cuda``).
        recommended: Data config values to use, key -> value.
        reasons: Why, one line per recommendation.
    """

    root: str
    image_size: int
    batch_size: int
    batches: int
    cache: str | None
    profiled_source: str
    rates: list[LoaderRate] = field(default_factory=list)
    hotspots: list[Hotspot] = field(default_factory=list)
    read_share: float = 0.0
    augment_per_s: dict[str, float] = field(default_factory=dict)
    recommended: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def rate(self, source: str, workers: int) -> LoaderRate | None:
        """Return the throughput of one setting, if it was measured."""
        return next((r for r in self.rates if (r.source, r.workers) == (source, workers)), None)

    def overrides(self) -> str:
        """The recommendations as ``cmi train`` overrides."""
        return " ".join(f"data.{k}={_yaml(v)}" for k, v in self.recommended.items())


def _yaml(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def profile_data(
    cfg: DataConfig,
    project_root: Path | None = None,
    workers: Sequence[int] = (0, 1, 2),
    batches: int = 10,
    repeats: int = 3,
    out_dir: Path | None = None,
) -> DataProfile:
    """Time the training loader per worker count, profile it, and recommend settings.

    Args:
        cfg: The data config training uses.
        project_root: Folder a relative ``cfg.root`` is resolved against (default: cwd).
        workers: Worker counts to try; counts above the machine's cores are lowered to it.
        batches: Batches timed per repeat.
        repeats: Timed repeats per setting (the median is reported).
        out_dir: Where to write ``data_profile.json``, ``hotspots.txt`` and ``loader.pstats``
            (nothing is written when ``None``).

    Raises:
        DataError: If the dataset is missing or does not fit the config.
    """
    import torch
    from torch.utils.data import DataLoader

    from cmi_cli.data.datamodule import SegmentationDataModule

    decoded = SegmentationDataModule(replace(cfg, cache="off"), project_root)
    decoded.setup("fit")
    cached = SegmentationDataModule(replace(cfg, cache="auto"), project_root)
    cached.setup("fit")
    datasets: dict[str, Dataset[Any]] = {"decode": decoded.train_set}  # type: ignore[dict-item]
    if cached.cache is not None:
        datasets["cache"] = cached.train_set  # type: ignore[assignment]
    cores = os.cpu_count() or 1
    counts = sorted({max(0, min(int(w), cores)) for w in workers})
    profile = DataProfile(
        root=str(decoded.root),
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        batches=batches,
        cache=str(cached.cache.path) if cached.cache is not None else None,
        profiled_source="cache" if cached.cache is not None and cfg.cache == "auto" else "decode",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for w in counts:
            runs = measure_loaders(datasets, cfg.batch_size, w, batches, repeats)
            for source, rates in runs.items():
                profile.rates.append(LoaderRate(source, w, statistics.median(rates), rates))
        stats = profile_loader(datasets[profile.profiled_source], cfg.batch_size, batches)
    finally:
        torch.set_num_threads(threads)
    # Training runs the augmentation with all its threads, so it is timed that way.
    batch = next(iter(DataLoader(datasets["decode"], batch_size=cfg.batch_size)))
    for device in ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]:
        profile.augment_per_s[device] = measure_batch_preprocess(
            decoded.batch_preprocess, batch, device
        )
    profile.hotspots = hotspots(stats)
    reader = (
        "cmi_cli/data/cache.py" if profile.profiled_source == "cache" else "cmi_cli/data/source.py"
    )
    profile.read_share = _share_of(stats, reader, "read")
    _recommend(profile, cuda=torch.cuda.is_available())
    if out_dir is not None:
        write_data_profile(profile, stats, Path(out_dir))
    return profile


def _endless(loader: Any) -> Generator[Any, None, None]:
    while True:
        yield from loader


def measure_loaders(
    datasets: Mapping[str, Dataset[Any]],
    batch_size: int,
    workers: int,
    batches: int,
    repeats: int,
    per_batch: Callable[[Any], Any] | None = None,
) -> dict[str, list[float]]:
    """Time several datasets' loaders in turns; return images per second per repeat.

    ``per_batch``, when given, is applied to every batch in the timed loop (training's
    augmentation, say), so its cost counts too. Each timing starts a fresh loader and drops
    its first batch, so worker start-up and cold files are not counted, and stops its workers
    before the next loader is timed: prefetching workers left running would steal the cores
    the next loader is timed on.
    """
    from torch.utils.data import DataLoader, RandomSampler

    rates: dict[str, list[float]] = {name: [] for name in datasets}
    for _ in range(repeats):
        for name, dataset in datasets.items():
            # Drawing with replacement gives enough batches from a split of any size.
            wanted = (batches + 1) * batch_size
            sampler = RandomSampler(dataset, replacement=True, num_samples=wanted)  # type: ignore[arg-type]
            loader = DataLoader(
                dataset, batch_size=batch_size, sampler=sampler, num_workers=workers
            )
            stream = iter(loader)
            next(stream)
            start, images = time.perf_counter(), 0
            for _ in range(batches):
                batch = next(stream)
                if per_batch is not None:
                    per_batch(batch)
                images += len(batch[0])
            rates[name].append(images / (time.perf_counter() - start))
            del stream  # shuts its workers down
    return rates


def measure_batch_preprocess(
    preprocess: Any, batch: tuple[Any, Any], device: str, repeats: int = 5
) -> float:
    """Return images per second of the per-batch training augmentation on ``device``."""
    import torch

    images, masks = (t.to(device) for t in batch)
    preprocess((images, masks), train=True)  # first call pays for kernel set-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        preprocess((images, masks), train=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def profile_loader(dataset: Dataset[Any], batch_size: int, batches: int) -> pstats.Stats:
    """Run cProfile over ``batches`` batches of a single-process loader."""
    from torch.utils.data import DataLoader

    stream = _endless(DataLoader(dataset, batch_size=batch_size, shuffle=True))
    next(stream)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(batches):
        next(stream)
    profiler.disable()
    stream.close()
    return pstats.Stats(profiler)


def _function_name(key: tuple[str, int, str]) -> str:
    path, line, name = key
    if path == "~":  # built-ins
        return name
    parts = Path(path).parts
    for anchor in ("site-packages", "cmi_cli", "lib"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            parts = parts[i + 1 :] if anchor != "cmi_cli" else parts[i:]
            break
    return f"{'/'.join(parts[-3:])}:{line}({name})"


def hotspots(stats: pstats.Stats, top: int = DEFAULT_TOP) -> list[Hotspot]:
    """Return the ``top`` functions of a cProfile run by cumulative time."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = float(stats.total_tt) or 1.0  # type: ignore[attr-defined]
    # The timing loop itself would head the table at 100%: leave it out.
    own = {(__file__, "_endless"), ("~", "<built-in method builtins.next>")}
    kept = [kv for kv in table.items() if (kv[0][0], kv[0][2]) not in own]
    rows = sorted(kept, key=lambda kv: kv[1][3], reverse=True)[:top]
    return [
        Hotspot(_function_name(key), int(nc), float(tt), float(ct), min(1.0, float(ct) / total))
        for key, (cc, nc, tt, ct, _callers) in rows
    ]


def _share_of(stats: pstats.Stats, path_end: str, name: str) -> float:
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = float(stats.total_tt) or 1.0  # type: ignore[attr-defined]
    spent = sum(
        value[3]
        for (path, _line, func), value in table.items()
        if func == name and path.replace(os.sep, "/").endswith(path_end)
    )
    return min(1.0, spent / total)


def _recommend(profile: DataProfile, cuda: bool) -> None:
    source = "cache" if profile.cache is not None else "decode"
    rates = sorted((r for r in profile.rates if r.source == source), key=lambda r: r.workers)
    best = max(rates, key=lambda r: r.images_per_s)
    # A worker costs a process and, on a CPU, a core the model could use: take the fewest
    # workers within 10% of the fastest.
    chosen = next(r for r in rates if r.images_per_s >= 0.9 * best.images_per_s)
    w = chosen.workers
    profile.recommended = {
        "num_workers": w,
        "persistent_workers": w > 0,
        "pin_memory": cuda,
        "prefetch_factor": (4 if cuda else 2) if w > 0 else None,
    }
    reasons = [
        f"{w} worker(s) load {chosen.images_per_s:.0f} images/s from the {source}"
        + (f" (the fastest, {best.workers}, {best.images_per_s:.0f})" if best is not chosen else "")
    ]
    if w > 0:
        reasons.append("persistent workers skip restarting the worker processes every epoch")
    reasons.append(
        "pinned memory speeds copies to the GPU" if cuda else "pinned memory only helps a GPU"
    )
    if profile.cache is None and profile.read_share >= DECODE_SHARE_FOR_CACHE:
        reasons.append(
            f"reading photos takes {100 * profile.read_share:.0f}% of the loader's time: run "
            f"`cmi data prepare {profile.root} --size {profile.image_size}`"
        )
    elif profile.cache is not None:
        fast, slow = profile.rate("cache", w), profile.rate("decode", w)
        if fast and slow:
            reasons.append(
                f"the packed cache is {fast.images_per_s / slow.images_per_s:.1f}x the "
                f"decoding rate at {w} worker(s)"
            )
    profile.reasons = reasons


def render_data_profile(profile: DataProfile, console: Console) -> None:
    """Print the throughput table, the hot functions and the recommendations."""
    table = Table(
        title=f"training loader: batch {profile.batch_size}, {profile.image_size}px, "
        f"median of {len(profile.rates[0].runs) if profile.rates else 0} x "
        f"{profile.batches} batches"
    )
    table.add_column("workers", justify="right")
    table.add_column("decode images/s", justify="right")
    has_cache = profile.cache is not None
    if has_cache:
        table.add_column("cache images/s", justify="right")
        table.add_column("cache / decode", justify="right")
    for w in sorted({r.workers for r in profile.rates}):
        slow, fast = profile.rate("decode", w), profile.rate("cache", w)
        cells = [str(w), f"{slow.images_per_s:.0f}" if slow else ""]
        if has_cache:
            ratio = fast.images_per_s / slow.images_per_s if fast and slow else None
            cells += [f"{fast.images_per_s:.0f}" if fast else "", f"{ratio:.1f}x" if ratio else ""]
        table.add_row(*cells)
    console.print(table)
    console.print(hotspot_table(profile))
    what = "copying pairs out of the cache" if profile.profiled_source == "cache" else "decoding"
    console.print(f"{what}: {100 * profile.read_share:.0f}% of the single-process loader's time")
    for device, rate in profile.augment_per_s.items():
        console.print(f"per-batch augmentation and normalisation on {device}: {rate:.0f} images/s")
    console.print("[bold]recommended[/bold]: " + profile.overrides())
    for reason in profile.reasons:
        console.print(f"  - {reason}")


def hotspot_table(profile: DataProfile) -> Table:
    """The cProfile top functions as a table."""
    table = Table(
        title=f"cProfile, single-process loader ({profile.profiled_source}), "
        f"top {len(profile.hotspots)} by cumulative time"
    )
    table.add_column("function", overflow="fold")
    table.add_column("calls", justify="right")
    table.add_column("self s", justify="right")
    table.add_column("cumulative s", justify="right")
    table.add_column("%", justify="right")
    for h in profile.hotspots:
        table.add_row(
            h.function,
            str(h.calls),
            f"{h.self_s:.3f}",
            f"{h.cumulative_s:.3f}",
            f"{100 * h.share:.0f}",
        )
    return table


def write_data_profile(profile: DataProfile, stats: pstats.Stats, out_dir: Path) -> None:
    """Write ``data_profile.json``, ``hotspots.txt`` and ``loader.pstats`` (for snakeviz)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "data_profile.json", json.dumps(asdict(profile), indent=2))
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(hotspot_table(profile))
    atomic_write_text(out_dir / "hotspots.txt", buffer.getvalue())
    stats.dump_stats(str(out_dir / "loader.pstats"))
