"""``cmi quickstart``: the whole chain on the embedded sample, one step after another.

Each step calls the same domain function as its own command, so the quickstart is also the
integration test of the pipeline. Later stages (train, export, serve, ...) append steps here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


def run_quickstart(
    directory: Path,
    images: int = SAMPLE_IMAGES,
    size: int = 256,
    seed: int = 0,
    show_progress: bool = True,
    overrides: list[str] | None = None,
) -> QuickstartResult:
    """Run init, data pull, validate, stats, train and evaluate on the sample in ``directory``.

    An existing cmi project in ``directory`` is reused rather than re-initialised, so the
    quickstart can be run again after a change.

    Args:
        directory: Project folder, created when missing.
        images: Photos in the sample.
        size: Side of the sample photos.
        seed: Seed of the sample.
        show_progress: Show progress bars.
        overrides: Training overrides on top of the project's ``params.yaml``.

    Returns:
        The steps with their timings; stops at the first failing step.
    """
    from cmi_cli.data import versioning
    from cmi_cli.data.stats import compute_stats, write_class_share_plot
    from cmi_cli.data.validate import validate_dataset
    from cmi_cli.project import init_project
    from cmi_cli.utils.files import atomic_write_text

    directory = Path(directory).resolve()
    result = QuickstartResult(root=directory)
    data_root = directory / "data" / "foodseg103"

    def init() -> str:
        if (directory / ".dvc").is_dir():
            return "reused the existing project"
        res = init_project(
            directory,
            sample_images=images,
            sample_size=size,
            seed=seed,
            show_progress=show_progress,
        )
        return f"git + DVC project, sample md5 {res.data_version}, remote {res.remote_url}"

    def pull() -> str:
        return versioning.pull(None, cwd=directory).summary()

    def validate() -> str:
        report = validate_dataset(data_root, show_progress=show_progress)
        checked = sum(report.checked.values())
        if not report.ok:
            raise CmiError(f"{len(report.problems)} problems in {checked} pairs")
        return f"{checked} pairs, no problems"

    def stats() -> str:
        # Not reports/data: that is the pipeline's stats output, which DVC owns.
        out = directory / "reports" / "quickstart"
        st = compute_stats(data_root, show_progress=show_progress)
        atomic_write_text(out / "stats.json", json.dumps(st.to_dict(), indent=2))
        png = write_class_share_plot(st, out / "class_shares.png")
        present = sum(1 for share in st.shares().values() if share > 0)
        return f"{present} classes present; chart {png.relative_to(directory)}"

    def train() -> str:
        from cmi_cli.config import compose_train_config
        from cmi_cli.training.train import train as train_model

        cfg = compose_train_config(
            list(overrides or []), config_file=directory / "params.yaml", project_root=directory
        )
        run = train_model(cfg, project_root=directory, show_progress=show_progress)
        if run.best_ckpt is None:
            raise CmiError("training wrote no checkpoint")
        result.artifacts["run"] = run.run_dir
        result.artifacts["checkpoint"] = run.best_ckpt
        best = run.metrics.get("best", {})
        return (
            f"{run.metrics.get('epochs_run')} epochs, best validation mIoU (carved from train) "
            f"{_fmt(best.get('val/miou'))} (epoch {run.metrics.get('best_epoch')}), "
            f"{run.run_dir.relative_to(directory)}"
        )

    def evaluate() -> str:
        from cmi_cli.training.evaluate import default_eval_json, evaluate_checkpoint

        ckpt = result.artifacts["checkpoint"]
        ev = evaluate_checkpoint(ckpt, data_root=data_root, split="test")
        out = default_eval_json(ckpt, ev.split)
        atomic_write_text(out, json.dumps(ev.to_dict(), indent=2))
        result.metrics.update(
            miou=ev.scores.miou,
            pixel_accuracy=ev.scores.pixel_accuracy,
            mean_class_accuracy=ev.scores.mean_class_accuracy,
        )
        return (
            f"test mIoU {_fmt(ev.scores.miou)}, pixel accuracy "
            f"{_fmt(ev.scores.pixel_accuracy)} on {ev.num_images} held-out images "
            "at their own size"
        )

    def export() -> str:
        from cmi_cli.export.onnx_export import export_onnx

        exported = export_onnx(result.artifacts["checkpoint"], data_root=data_root)
        result.artifacts["onnx"] = exported.path
        return (
            f"{exported.path.relative_to(directory)} ({exported.size_bytes / 1e6:.1f} MB), "
            f"max |diff| vs PyTorch {exported.report.max_abs_diff:.1e}"
        )

    def quantize() -> str:
        from cmi_cli.export.quantize import quantize_onnx

        quant = quantize_onnx(result.artifacts["onnx"], calib_data=data_root, data_root=data_root)
        result.artifacts["int8"] = quant.path
        verdict = "kept" if quant.accepted else "REJECTED (mIoU drop over the limit)"
        return (
            f"{quant.path.relative_to(directory)}: {verdict}; mIoU {quant.fp32.miou:.3f} -> "
            f"{quant.int8.miou:.3f}, {quant.fp32.size_mb / max(quant.int8.size_mb, 1e-9):.1f}x "
            f"smaller, pixel agreement {quant.pixel_agreement:.3f}"
        )

    def drift() -> str:
        from cmi_cli.monitoring.sources import drift_check

        # The sample's test split against the trained model's reference: the same distribution,
        # so a working monitor reports (almost) no drift here.
        res, paths = drift_check(
            result.artifacts["run"],
            str(data_root),
            split="test",
            min_samples=min(10, _test_count(data_root)),
            out_dir=directory / "reports" / "drift",
        )
        result.metrics["drift_share"] = res.share
        report = paths["report.html"].relative_to(directory)
        return (
            f"{len(res.drifted_features)} of {len(res.features)} features drifted "
            f"(share {res.share:.2f}); {report}"
        )

    def benchmark() -> str:
        from cmi_cli.export.benchmark import BenchmarkSettings, benchmark_checkpoint

        size = int(_preprocessing(result.artifacts["checkpoint"])["image_size"])
        settings = BenchmarkSettings(
            formats=("torch", "onnx", "onnx-int8"), batches=(1,), size=size, repeats=5
        )
        bench = benchmark_checkpoint(result.artifacts["checkpoint"], settings, data_root=data_root)
        result.artifacts["benchmark"] = bench
        fastest = min(bench.rows, key=lambda r: r.p50_ms if r.p50_ms is not None else 1e9)
        return f"fastest: {fastest.format} ({fastest.p50_ms:.1f} ms/image at {size}px)"

    steps = (
        ("init", init),
        ("data pull", pull),
        ("validate", validate),
        ("stats", stats),
        ("train", train),
        ("evaluate", evaluate),
        ("export onnx", export),
        ("quantize", quantize),
        ("drift-check", drift),
        ("benchmark", benchmark),
    )
    for name, fn in steps:
        if not _run_step(result, name, fn):
            break
    return result


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
