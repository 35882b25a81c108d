"""Drive a ``cmi predict`` run: discover, skip what is done, fan batches out, record results.

The story: find the photos (:mod:`~cmi_cli.predict.sources`) -> with ``--resume``, drop those
the journal and the output folder say are finished -> cut the rest into batches -> run them
inline (one worker) or on N workers, each with its own model session, keeping at most a few
batches in flight -> take results back in submission order, so the journal, and the table
rebuilt from it, have the same order whatever the worker count -> write the table, the errors
file and ``predict.json`` (what made the outputs).

Workers are threads by default, each with its own session: ONNX Runtime, Pillow's decoders
and encoders and numpy's array loops release the GIL for most of each photo, threads start at
once and share memory, and on the shared development machine 2 threads ran ahead of 2
processes (docs/guides/predict.md has the numbers). ``pool="process"`` gives each worker its
own interpreter, for when Python-side work would contend for the GIL.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmi_cli import __version__
from cmi_cli.console import err_console, info, is_quiet
from cmi_cli.errors import CmiError, UsageError
from cmi_cli.predict.batch import BatchPredictor
from cmi_cli.predict.sources import PhotoRef, discover
from cmi_cli.predict.writers import (
    JOURNAL,
    SAVE_KINDS,
    output_paths,
    read_journal,
    write_errors,
    write_table,
)
from cmi_cli.utils.files import atomic_write_text

if TYPE_CHECKING:
    from cmi_cli.predict.nutrition import NutritionOptions

MANIFEST = "predict.json"
BACKENDS = ("onnx", "torch")
POOLS = ("process", "thread")


class NothingPredictedError(CmiError):
    """Every photo failed: nothing was predicted."""


@dataclass
class PredictSettings:
    """What to predict, with what, and where the outputs go."""

    model: Path
    sources: Sequence[str]
    out: Path = Path("predict-out")
    save: Sequence[str] = ("mask", "overlay", "table")
    batch_size: int = 8
    workers: int = 1
    resume: bool = False
    backend: str = "onnx"
    pool: str = "thread"
    threads: int | None = None
    show_progress: bool = True
    nutrition: bool = False
    plate_diameter_cm: float | None = None
    nutrition_table: Path | None = None

    def check(self) -> None:
        """Reject impossible settings, naming the option."""
        unknown = [k for k in self.save if k not in SAVE_KINDS]
        if unknown or not self.save:
            raise UsageError(
                f"--save {','.join(self.save)!r} names {', '.join(unknown) or 'nothing'}",
                hint=f"Use a comma list of {', '.join(SAVE_KINDS)}",
            )
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend {self.backend!r} is unknown", hint="Use onnx or torch")
        if self.pool not in POOLS:
            raise UsageError(f"pool {self.pool!r} is unknown", hint="Use process or thread")
        if self.batch_size < 1 or self.workers < 1:
            raise UsageError("--batch-size and --workers must be >= 1")
        if not Path(self.model).is_file():
            raise UsageError(f"model {self.model} does not exist", hint="Check the path")
        if not self.nutrition and (
            self.plate_diameter_cm is not None or self.nutrition_table is not None
        ):
            raise UsageError(
                "--plate-diameter-cm and --nutrition-table need --nutrition",
                hint="Add --nutrition",
            )
        if self.nutrition and "table" not in self.save:
            raise UsageError("--nutrition adds columns to the table", hint="Add table to --save")
        # A bad table or plate size fails here, before any photo is read.
        self.nutrition_options()

    def nutrition_options(self) -> NutritionOptions | None:
        """The validated table and plate size with ``--nutrition``, else None."""
        if not self.nutrition:
            return None
        from cmi_cli.predict.nutrition import NutritionOptions

        return NutritionOptions.load(self.nutrition_table, self.plate_diameter_cm)

    def session_threads(self) -> int:
        """Inference threads per worker: the cores shared out, unless set."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)


@dataclass
class PredictResult:
    """What a run did."""

    out: Path
    found: int
    predicted: int
    skipped: int
    errors: list[tuple[str, str]]
    seconds: float
    model: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        """Photos predicted per second of this run (skipped ones not counted)."""
        return self.predicted / self.seconds if self.seconds > 0 else 0.0


# One model per worker process, made by the pool's initializer.
_WORKER: dict[str, BatchPredictor] = {}


def _load(settings: PredictSettings) -> BatchPredictor:
    from cmi_cli.predict.segment import MAX_PIXELS
    from cmi_cli.serving.images import set_pixel_limit
    from cmi_cli.serving.predictor import ServedModel

    set_pixel_limit(MAX_PIXELS)
    model = ServedModel.load(settings.model, settings.backend, settings.session_threads())
    nutrition = settings.nutrition_options()
    if nutrition is not None:
        # Every class the model can find needs a row: checked before any photo is read.
        nutrition.table.check_classes(model.class_names)
    save = [k for k in settings.save if k != "table"]
    return BatchPredictor(model, settings.out, save, nutrition)


def _init_process(settings: PredictSettings) -> None:
    _WORKER["predictor"] = _load(settings)


def _process_batch(refs: list[PhotoRef]) -> list[dict[str, Any]]:
    return _WORKER["predictor"](refs)


class _Workers:
    """Run batches inline, on threads (a model each) or on processes (a model each)."""

    def __init__(self, settings: PredictSettings) -> None:
        self.settings = settings
        self.executor: Executor | None = None
        self._local = threading.local()
        # Loaded here whatever the pool, so a bad model fails in one line before any worker
        # starts; one worker then uses it, more get their own.
        self._inline = _load(settings)
        self.model = self._inline.describe()
        # The first worker thread takes this model over instead of loading another.
        self._spare: BatchPredictor | None = self._inline
        self._lock = threading.Lock()
        if settings.workers > 1 and settings.pool == "thread":
            self.executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="predict")
        elif settings.workers > 1:
            import multiprocessing

            # spawn: a forked ONNX Runtime or torch thread pool can deadlock in the child.
            self.executor = ProcessPoolExecutor(
                settings.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_process,
                initargs=(settings,),
            )

    def static_batch(self) -> int | None:
        """The batch size a static ONNX export accepts, or None when it is dynamic."""
        shape = getattr(self._inline.model.backend, "input_shape", None) or [None]
        return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    def _thread_predictor(self) -> BatchPredictor:
        if not hasattr(self._local, "predictor"):
            with self._lock:
                spare, self._spare = self._spare, None
            self._local.predictor = spare or _load(self.settings)
        predictor: BatchPredictor = self._local.predictor
        return predictor

    def map_ordered(self, batches: Sequence[list[PhotoRef]]) -> Iterator[list[dict[str, Any]]]:
        """Yield each batch's results in submission order, a bounded number in flight."""
        if self.executor is None:
            for batch in batches:
                yield self._inline(batch)
            return
        fn: Callable[[list[PhotoRef]], list[dict[str, Any]]]
        if isinstance(self.executor, ProcessPoolExecutor):
            fn = _process_batch
        else:
            fn = lambda b: self._thread_predictor()(b)  # noqa: E731
        pending: deque[Future[list[dict[str, Any]]]] = deque()
        todo = iter(batches)
        for batch in todo:
            pending.append(self.executor.submit(fn, batch))
            if len(pending) >= 2 * self.settings.workers:
                break
        while pending:
            done = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(self.executor.submit(fn, nxt))
            yield done

    def close(self, cancel: bool = False) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=cancel)


class _Progress:
    """A rich bar with images/s on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, total: int, show: bool, every_s: float = 10.0) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.show = show and not is_quiet()
        self.every_s, self._last = every_s, self.start
        self._bar: Any = None
        if self.show and err_console().is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("predict"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console(),
                transient=True,
            )
            self._task = self._bar.add_task("predict", total=total, rate="")
            self._bar.start()

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate():.1f} images/s")
        elif self.show and time.perf_counter() - self._last >= self.every_s:
            self._last = time.perf_counter()
            info(f"predict: {self.done}/{self.total} photos, {self.rate():.1f} images/s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _finished(
    record: dict[str, Any] | None,
    out: Path,
    save: Sequence[str],
    nutrition: NutritionOptions | None = None,
) -> bool:
    if record is None or not set(save) - {"table"} <= set(record.get("saved", [])):
        return False
    if nutrition is not None:
        # An estimate with another plate size or table (or none) is redone.
        key = nutrition.key()
        if {k: (record.get("nutrition") or {}).get(k) for k in key} != key:
            return False
    return all(p.is_file() for p in output_paths(out, str(record["name"]), save))


def predict(settings: PredictSettings) -> PredictResult:
    """Predict every photo of the SOURCEs; write masks, overlays, the table and the errors file.

    Args:
        settings: Model, sources, output folder, what to save, batching and workers.

    Returns:
        Counts, timing, the model's description and the files written.

    Raises:
        UsageError: Bad settings, a SOURCE that does not exist, or no photo found.
        ArtifactError: The model cannot be loaded.
        NothingPredictedError: Every photo failed (they are listed in ``errors.csv``).
    """
    settings.check()
    out = Path(settings.out)
    found = discover(settings.sources, exclude=out)
    if not found.photos and not found.missing:
        raise UsageError(
            f"no photos found in {' '.join(settings.sources)}",
            hint="cmi predict reads .jpg, .jpeg, .png and .webp files",
        )
    out.mkdir(parents=True, exist_ok=True)
    journal = read_journal(out) if settings.resume else {}
    nutrition = settings.nutrition_options()
    todo = [
        p for p in found.photos if not _finished(journal.get(p.key), out, settings.save, nutrition)
    ]
    skipped = len(found.photos) - len(todo)
    errors: list[tuple[str, str]] = list(found.missing)
    start = time.perf_counter()
    predicted = 0
    workers = _Workers(settings)
    model = workers.model
    if workers.static_batch() == 1 and settings.batch_size != 1:
        info(f"{Path(settings.model).name} is a static export for one photo: --batch-size 1")
        settings.batch_size = 1
    size = settings.batch_size
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    progress = _Progress(len(todo), settings.show_progress)
    mode = "a" if settings.resume else "w"
    try:
        with (out / JOURNAL).open(mode, encoding="utf-8") as fh:
            for results in workers.map_ordered(batches):
                for rec in results:
                    if "error" in rec:
                        errors.append((rec["image"], rec["error"]))
                    else:
                        fh.write(json.dumps(rec) + "\n")
                        predicted += 1
                fh.flush()
                progress.advance(len(results))
    except BaseException:
        progress.close()
        workers.close(cancel=True)
        if "table" in settings.save:
            # The photos finished so far keep their rows; the original error is what matters.
            with contextlib.suppress(Exception):
                write_table(out, read_journal(out).values(), settings.nutrition)
        raise
    progress.close()
    workers.close()
    seconds = time.perf_counter() - start
    result = PredictResult(out, len(found.photos), predicted, skipped, errors, seconds, model)
    if "table" in settings.save:
        result.files += write_table(out, read_journal(out).values(), settings.nutrition)
    result.files.append(write_errors(out, errors))
    result.files.append(_write_manifest(settings, result))
    if errors and predicted + skipped == 0:
        raise NothingPredictedError(
            f"none of the {len(errors)} photos could be predicted",
            hint=f"See {out / 'errors.csv'} for each path and reason",
        )
    return result


def _write_manifest(settings: PredictSettings, result: PredictResult) -> Path:
    from cmi_cli.lineage import now_iso

    nutrition = settings.nutrition_options()
    manifest = {
        "tool": f"cmi-cli {__version__}",
        "finished": now_iso(),
        "model": result.model,
        "sources": [str(s) for s in settings.sources],
        "settings": {
            "save": list(settings.save),
            "batch_size": settings.batch_size,
            "workers": settings.workers,
            "pool": settings.pool,
            "threads_per_worker": settings.session_threads(),
            "resume": settings.resume,
        },
        "photos": {
            "found": result.found,
            "predicted": result.predicted,
            "skipped_done": result.skipped,
            "failed": len(result.errors),
        },
        "seconds": round(result.seconds, 3),
        "images_per_s": round(result.images_per_s, 2),
        "nutrition": None if nutrition is None else nutrition.describe(),
    }
    return atomic_write_text(result.out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
