"""``cmi quickstart``: the whole chain on the embedded sample, one step after another.

Each step is a small function of the same name (``step_train``, ``step_export``, ...) that calls
the same domain function as its own command, so the quickstart is also the integration test of
the pipeline. :data:`STEPS` lists the chain in order; ``cmi quickstart --step export`` (or
``run_quickstart(dir, only=["export"])``) runs one step again alone, taking the earlier steps'
artifacts from the project's latest run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cmi_cli.console import info
from cmi_cli.errors import CmiError
from cmi_cli.paths import SAMPLE_IMAGES


@dataclass
class StepResult:
    """The outcome of one quickstart step."""

    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class QuickstartResult:
    """Everything the quickstart did, for the summary table."""

    root: Path
    steps: list[StepResult] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every step succeeded."""
        return all(step.ok for step in self.steps)


def _run_step(result: QuickstartResult, name: str, fn: Callable[[], str]) -> bool:
    info(f"[bold cyan]>>[/bold cyan] {name}")
    start = time.perf_counter()
    try:
        detail, ok = fn(), True
    except CmiError as exc:
        detail, ok = exc.one_line(), False
    result.steps.append(StepResult(name, ok, time.perf_counter() - start, detail))
    return ok


@dataclass
class Quickstart:
    """What every step reads: the project, the sample's settings, and the results so far.

    A step that needs an earlier step's artifact (the checkpoint, the ONNX model) finds it in
    ``result.artifacts`` or, when run alone, in the project's latest run (:meth:`artifact`).
    """

    directory: Path
    images: int = SAMPLE_IMAGES
    size: int = 256
    seed: int = 0
    show_progress: bool = True
    overrides: list[str] = field(default_factory=list)
    result: QuickstartResult = field(init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.result = QuickstartResult(root=self.directory)

    @property
    def data_root(self) -> Path:
        """The project's sample dataset."""
        return self.directory / "data" / "foodseg103"

    def artifact(self, name: str) -> Any:
        """An earlier step's output: this run's, else the project's latest run's.

        Raises:
            CmiError: If no earlier run of the quickstart left it.
        """
        from cmi_cli.export.onnx_export import default_onnx_path
        from cmi_cli.export.quantize import default_int8_path

        if name in self.result.artifacts:
            return self.result.artifacts[name]
        found = sorted(
            (self.directory / "runs").glob("*/checkpoints/best.ckpt"),
            key=lambda p: p.stat().st_mtime,
        )
        if found:
            ckpt = found[-1]
            candidates = {
                "checkpoint": ckpt,
                "run": ckpt.parent.parent,
                "onnx": default_onnx_path(ckpt),
                "int8": default_int8_path(default_onnx_path(ckpt)),
            }
            path = candidates.get(name)
            if path is not None and path.exists():
                self.result.artifacts[name] = path
                return path
        raise CmiError(
            f"no {name} in {self.directory} yet",
            hint="Run the steps before it first: cmi quickstart (without --step)",
        )


def step_init(qs: Quickstart) -> str:
    """A git + DVC project with the sample tracked (an existing project is reused)."""
    from cmi_cli.project import init_project

    if (qs.directory / ".dvc").is_dir():
        return "reused the existing project"
    res = init_project(
        qs.directory,
        sample_images=qs.images,
        sample_size=qs.size,
        seed=qs.seed,
        show_progress=qs.show_progress,
    )
    return f"git + DVC project, sample md5 {res.data_version}, remote {res.remote_url}"


def step_pull(qs: Quickstart) -> str:
    """``cmi data pull``: the tracked data from the DVC remote."""
    from cmi_cli.data import versioning

    return versioning.pull(None, cwd=qs.directory).summary()


def step_validate(qs: Quickstart) -> str:
    """``cmi data validate``: every image/mask pair readable and consistent."""
    from cmi_cli.data.validate import validate_dataset

    report = validate_dataset(qs.data_root, show_progress=qs.show_progress)
    checked = sum(report.checked.values())
    if not report.ok:
        raise CmiError(f"{len(report.problems)} problems in {checked} pairs")
    return f"{checked} pairs, no problems"


def step_stats(qs: Quickstart) -> str:
    """``cmi data stats``: class shares, as JSON and a chart."""
    from cmi_cli.data.stats import compute_stats, write_class_share_plot
    from cmi_cli.utils.files import atomic_write_text

    # Not reports/data: that is the pipeline's stats output, which DVC owns.
    out = qs.directory / "reports" / "quickstart"
    st = compute_stats(qs.data_root, show_progress=qs.show_progress)
    atomic_write_text(out / "stats.json", json.dumps(st.to_dict(), indent=2))
    png = write_class_share_plot(st, out / "class_shares.png")
    present = sum(1 for share in st.shares().values() if share > 0)
    return f"{present} classes present; chart {png.relative_to(qs.directory)}"


def step_train(qs: Quickstart) -> str:
    """``cmi train`` with the project's params.yaml and the overrides."""
    from cmi_cli.config import compose_train_config
    from cmi_cli.training.train import train as train_model

    cfg = compose_train_config(
        list(qs.overrides), config_file=qs.directory / "params.yaml", project_root=qs.directory
    )
    run = train_model(cfg, project_root=qs.directory, show_progress=qs.show_progress)
    if run.best_ckpt is None:
        raise CmiError("training wrote no checkpoint")
    qs.result.artifacts["run"] = run.run_dir
    qs.result.artifacts["checkpoint"] = run.best_ckpt
    best = run.metrics.get("best", {})
    return (
        f"{run.metrics.get('epochs_run')} epochs, best validation mIoU (carved from train) "
        f"{_fmt(best.get('val/miou'))} (epoch {run.metrics.get('best_epoch')}), "
        f"{run.run_dir.relative_to(qs.directory)}"
    )


def step_evaluate(qs: Quickstart) -> str:
    """``cmi evaluate`` of the best checkpoint on the test split."""
    from cmi_cli.training.evaluate import default_eval_json, evaluate_checkpoint
    from cmi_cli.utils.files import atomic_write_text

    ckpt = qs.artifact("checkpoint")
    ev = evaluate_checkpoint(ckpt, data_root=qs.data_root, split="test")
    out = default_eval_json(ckpt, ev.split)
    atomic_write_text(out, json.dumps(ev.to_dict(), indent=2))
    qs.result.metrics.update(
        miou=ev.scores.miou,
        pixel_accuracy=ev.scores.pixel_accuracy,
        mean_class_accuracy=ev.scores.mean_class_accuracy,
    )
    return (
        f"test mIoU {_fmt(ev.scores.miou)}, pixel accuracy "
        f"{_fmt(ev.scores.pixel_accuracy)} on {ev.num_images} held-out images "
        "at their own size"
    )


def step_export(qs: Quickstart) -> str:
    """``cmi export onnx``, validated against PyTorch."""
    from cmi_cli.export.onnx_export import export_onnx

    exported = export_onnx(qs.artifact("checkpoint"), data_root=qs.data_root)
    qs.result.artifacts["onnx"] = exported.path
    return (
        f"{exported.path.relative_to(qs.directory)} ({exported.size_bytes / 1e6:.1f} MB), "
        f"max |diff| vs PyTorch {exported.report.max_abs_diff:.1e}"
    )


def step_quantize(qs: Quickstart) -> str:
    """``cmi quantize``: static int8 with its accuracy delta."""
    from cmi_cli.export.quantize import quantize_onnx

    quant = quantize_onnx(qs.artifact("onnx"), calib_data=qs.data_root, data_root=qs.data_root)
    qs.result.artifacts["int8"] = quant.path
    verdict = "kept" if quant.accepted else "REJECTED (mIoU drop over the limit)"
    return (
        f"{quant.path.relative_to(qs.directory)}: {verdict}; mIoU {quant.fp32.miou:.3f} -> "
        f"{quant.int8.miou:.3f}, {quant.fp32.size_mb / max(quant.int8.size_mb, 1e-9):.1f}x "
        f"smaller, pixel agreement {quant.pixel_agreement:.3f}"
    )


def step_drift(qs: Quickstart) -> str:
    """``cmi drift-check`` of the test split against the run's reference."""
    from cmi_cli.monitoring.sources import drift_check

    # The sample's test split against the trained model's reference: the same distribution,
    # so a working monitor reports (almost) no drift here.
    res, paths = drift_check(
        qs.artifact("run"),
        str(qs.data_root),
        split="test",
        min_samples=min(10, _test_count(qs.data_root)),
        out_dir=qs.directory / "reports" / "drift",
    )
    qs.result.metrics["drift_share"] = res.share
    report = paths["report.html"].relative_to(qs.directory)
    return (
        f"{len(res.drifted_features)} of {len(res.features)} features drifted "
        f"(share {res.share:.2f}); {report}"
    )


def step_benchmark(qs: Quickstart) -> str:
    """``cmi benchmark`` of torch, ONNX and int8 at batch 1."""
    from cmi_cli.export.benchmark import BenchmarkSettings, benchmark_checkpoint

    ckpt = qs.artifact("checkpoint")
    size = int(_preprocessing(ckpt)["image_size"])
    settings = BenchmarkSettings(
        formats=("torch", "onnx", "onnx-int8"), batches=(1,), size=size, repeats=5
    )
    bench = benchmark_checkpoint(ckpt, settings, data_root=qs.data_root)
    qs.result.artifacts["benchmark"] = bench
    fastest = min(bench.rows, key=lambda r: r.p50_ms if r.p50_ms is not None else 1e9)
    return f"fastest: {fastest.format} ({fastest.p50_ms:.1f} ms/image at {size}px)"


# The chain, in order: (name, step). `cmi quickstart --step NAME` runs one again alone.
STEPS: tuple[tuple[str, Callable[[Quickstart], str]], ...] = (
    ("init", step_init),
    ("data pull", step_pull),
    ("validate", step_validate),
    ("stats", step_stats),
    ("train", step_train),
    ("evaluate", step_evaluate),
    ("export onnx", step_export),
    ("quantize", step_quantize),
    ("drift-check", step_drift),
    ("benchmark", step_benchmark),
)
STEP_NAMES = tuple(name for name, _ in STEPS)


def run_quickstart(
    directory: Path,
    images: int = SAMPLE_IMAGES,
    size: int = 256,
    seed: int = 0,
    show_progress: bool = True,
    overrides: list[str] | None = None,
    only: Sequence[str] | None = None,
) -> QuickstartResult:
    """Run the :data:`STEPS` on the sample in ``directory``, stopping at the first failure.

    An existing cmi project in ``directory`` is reused rather than re-initialised, so the
    quickstart can be run again after a change, in whole or step by step.

    Args:
        directory: Project folder, created when missing.
        images: Photos in the sample.
        size: Side of the sample photos.
        seed: Seed of the sample.
        show_progress: Show progress bars.
        overrides: Training overrides on top of the project's ``params.yaml``.
        only: Run just these steps (names of :data:`STEPS`, e.g. ``["export onnx"]``), reading
            earlier steps' artifacts from the project's latest run.

    Returns:
        The steps with their timings.

    Raises:
        UsageError: If ``only`` names an unknown step.
    """
    qs = Quickstart(directory, images, size, seed, show_progress, list(overrides or []))
    wanted = [_step_name(name) for name in only] if only else list(STEP_NAMES)
    for name, step in STEPS:
        if name in wanted and not _run_step(qs.result, name, partial(step, qs)):
            break
    return qs.result


def _step_name(name: str) -> str:
    """A step's name as given on the command line: ``export`` or ``export onnx``."""
    from cmi_cli.errors import UsageError

    matches = [s for s in STEP_NAMES if name in (s, s.split()[0], s.replace(" ", "-"))]
    if len(matches) != 1:
        raise UsageError(f"no quickstart step {name!r}", hint=f"Steps: {', '.join(STEP_NAMES)}")
    return matches[0]


def _test_count(data_root: Path) -> int:
    from cmi_cli.data.layout import open_dataset

    return len(open_dataset(data_root).items("test"))


def _preprocessing(checkpoint: Path) -> dict[str, Any]:
    from cmi_cli.training.checkpoint import load_checkpoint

    return dict(load_checkpoint(checkpoint)["cmi_lineage"]["preprocessing"])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_quickstart(result: QuickstartResult, console: Console) -> None:
    """Print the quickstart's summary table."""
    table = Table(title=f"cmi quickstart in {result.root}")
    table.add_column("step")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("result")
    for step in result.steps:
        status = "[green]ok[/green]" if step.ok else "[red]failed[/red]"
        table.add_row(step.name, status, f"{step.seconds:.1f}s", step.detail)
    console.print(table)
    if "benchmark" in result.artifacts:
        from cmi_cli.export.bench_report import render_benchmark

        render_benchmark(result.artifacts["benchmark"], console)
    if "checkpoint" in result.artifacts:
        console.print(f"checkpoint: {result.artifacts['checkpoint']}")
        console.print(f"inspect it: cmi info {result.artifacts['checkpoint']}")
    if "onnx" in result.artifacts:
        console.print(f"serve it:   cmi serve {result.artifacts['onnx']}")
        console.print(
            "then open http://127.0.0.1:8000/ or: curl -F file=@photo.jpg "
            "http://127.0.0.1:8000/v1/segment"
        )
