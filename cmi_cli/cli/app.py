"""The root ``cmi`` application: global options, error handling, and command registration."""

import importlib
import importlib.util
import inspect
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from cmi_cli import __version__
from cmi_cli.cli import data
from cmi_cli.console import err_console, is_verbose, setup_logging
from cmi_cli.errors import CmiError


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """No type label for an on/off flag: ``--json`` takes no value, so ``<bool>`` misleads."""
    return None if self.is_flag else _typer_display_type(self, ctx)


# Typer's rich help labels every option with its type, flags included (``--json <bool>``),
# since 0.29; its one hook for that label is this method, so flags get none. Older releases
# (down to the 0.28 floor) have no such method and label no flag.
if hasattr(TyperOption, "display_type_rich"):
    _typer_display_type = TyperOption.display_type_rich
    TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


class CmiGroup(TyperGroup):
    """Root group that turns :class:`CmiError` into one line and an exit status.

    Catching here (rather than in ``main``) means Typer's test runner sees the same
    behaviour as the real executable. It also reflows every command's help text, as
    Typer's rich help keeps a docstring's line breaks, which wraps raggedly on a terminal
    narrower than the source.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _reflow_help(self)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        """Run the command, reporting user errors without a traceback unless verbose."""
        try:
            return super().invoke(ctx)
        except CmiError as exc:
            if is_verbose():
                err_console().print_exception(show_locals=False)
            err_console().print(
                f"[bold red]error:[/bold red] {escape(exc.one_line())}", soft_wrap=True
            )
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console().print("[bold red]interrupted[/bold red]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            if is_verbose():
                raise
            err_console().print(
                f"[bold red]error:[/bold red] {type(exc).__name__}: {escape(str(exc))} "
                "(rerun with --verbose for the traceback)",
                soft_wrap=True,
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    name="cmi",
    cls=CmiGroup,
    help=(
        "Food-photo segmentation from data to service: data (DVC) -> train (Hydra, Lightning, "
        "W&B) -> sweep -> profile -> export -> quantize -> benchmark -> serve -> drift-check."
    ),
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def reflow(text: str) -> str:
    """Join the lines of each paragraph of a help text into one line.

    Paragraphs are separated by blank lines; one starting with Click's keep-as-is mark (a
    backspace character) or holding indented lines is left alone.
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") or "\n " in p else " ".join(p.split("\n")) for p in paragraphs
    )


def _reflow_help(command: Any) -> None:
    if getattr(command, "help", None):
        command.help = reflow(command.help)
    for sub in getattr(command, "commands", {}).values():
        _reflow_help(sub)


def escape(text: str) -> str:
    """Escape rich markup in a message (paths and hints may hold square brackets)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cmi {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging and full tracebacks.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings, errors and results.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Food-photo segmentation from data to service, from one command line."""
    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other")
    setup_logging(verbose=verbose, quiet=quiet)


# Each module registers its commands with ``register(app)``.
COMMAND_MODULES = (
    "project",
    "train",
    "sweep",
    "profile",
    "export",
    "quantize",
    "prune",
    "benchmark",
    "serve",
    "monitor",
    "predict",
)


def _register_commands(root: typer.Typer) -> None:
    root.add_typer(data.app, name="data", rich_help_panel="Data")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"cmi_cli.cli.{name}") is not None:
            importlib.import_module(f"cmi_cli.cli.{name}").register(root)


_register_commands(app)
