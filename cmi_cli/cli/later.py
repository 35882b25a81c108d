"""Commands of the design card that later releases fill in.

Each is registered so ``cmi --help`` shows the whole pipeline, says what it will do, and exits 2
with "not available yet" instead of pretending to work. A command moves out of this table into
its own module when it is implemented.
"""

from collections.abc import Callable

import typer

from cmi_cli.errors import NotAvailableError

# name -> (help panel, what the command will do)
PLANNED: dict[str, tuple[str, str]] = {
    "sweep": (
        "Model",
        "Search hyper-parameters from one W&B-format sweep spec with Optuna (default) or W&B.",
    ),
    "profile": (
        "Optimise",
        "Profile training, inference or the data pipeline with torch.profiler and cProfile.",
    ),
    "export": (
        "Optimise",
        "Export a checkpoint to ONNX with validation against PyTorch and lineage metadata.",
    ),
    "quantize": (
        "Optimise",
        "Quantize an ONNX model to int8 with ONNX Runtime, calibrated on real images.",
    ),
    "prune": (
        "Optimise",
        "Prune channels of a checkpoint with torch-pruning and fine-tune it.",
    ),
    "benchmark": (
        "Optimise",
        "Measure every model format side by side: size, mIoU, latency, throughput.",
    ),
    "serve": (
        "Serve & monitor",
        "Serve a model over HTTP with FastAPI: API, web page, Prometheus metrics, prediction log.",
    ),
    "drift-check": (
        "Serve & monitor",
        "Compare served inputs and predictions with the training reference using Evidently.",
    ),
}


def _make_stub(name: str) -> Callable[[typer.Context], None]:
    def stub(ctx: typer.Context) -> None:
        raise NotAvailableError(
            f"'cmi {name}' is not available yet in this version",
            hint="See 'cmi --help' for the commands that work today",
        )

    return stub


def register(app: typer.Typer, skip: frozenset[str] = frozenset()) -> None:
    """Register every planned command not in ``skip`` on ``app``.

    Args:
        app: The root application.
        skip: Names that have a real implementation and must not be shadowed.
    """
    for name, (panel, text) in PLANNED.items():
        if name in skip:
            continue
        app.command(
            name,
            help=f"{text}\n\n[dim](not available yet)[/dim]",
            rich_help_panel=panel,
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            add_help_option=True,
        )(_make_stub(name))
