"""``cmi quickstart``: the whole chain on the embedded sample, one step after another.

Each step calls the same domain function as its own command, so the quickstart is also the
integration test of the pipeline. Later stages (train, export, serve, ...) append steps here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cmi_cli.console import info
from cmi_cli.errors import CmiError


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
    images: int = 96,
    size: int = 256,
    seed: int = 0,
    show_progress: bool = True,
) -> QuickstartResult:
    """Run init, data pull, validate and stats on the sample in ``directory``.

    An existing cmi project in ``directory`` is reused rather than re-initialised, so the
    quickstart can be run again after a change.

    Args:
        directory: Project folder, created when missing.
        images: Photos in the sample.
        size: Side of the sample photos.
        seed: Seed of the sample.
        show_progress: Show progress bars.

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
        import json

        out = directory / "reports" / "data"
        st = compute_stats(data_root, show_progress=show_progress)
        atomic_write_text(out / "stats.json", json.dumps(st.to_dict(), indent=2))
        png = write_class_share_plot(st, out / "class_shares.png")
        present = sum(1 for share in st.shares().values() if share > 0)
        return f"{present} classes present; chart {png.relative_to(directory)}"

    for name, fn in (("init", init), ("data pull", pull), ("validate", validate), ("stats", stats)):
        if not _run_step(result, name, fn):
            break
    return result


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
