"""``cmi sweep``: hyperparameter search from one W&B-format spec, with Optuna or W&B."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cmi_cli.console import err_console, info, is_quiet, out_console
from cmi_cli.errors import UsageError

PANEL = "Model"


class Backend(str, Enum):
    """The engine that runs a sweep."""

    optuna = "optuna"
    wandb = "wandb"


def _looks_like_override(text: str) -> bool:
    return "=" in text or text.startswith(("~", "+"))


def sweep_cmd(
    spec: Annotated[
        str | None,
        typer.Argument(
            help="A sweep spec: a YAML path, or a name in configs/sweep/ (default, lr_width, "
            "tiny). Default: default.",
            show_default=False,
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Fixed 'cmi train' overrides for every trial, e.g. debug=tiny "
            "trainer.max_epochs=5.",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        Backend, typer.Option("--backend", "-b", help="Search engine.")
    ] = Backend.optuna,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            "-n",
            min=1,
            help="Trials the study should hold when done (a rerun adds the missing ones). "
            "Default: the grid's size, the spec's run_cap, or 10.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", "-j", min=1, help="Parallel trial processes on this machine."),
    ] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna storage URL. Default: SQLite sweeps/NAME/study.db. Share one study "
            "between machines with postgresql://user:password@host/db (pip install "
            "'cmi-cli[postgres]'): run the same command, same --study-name, on each.",
            envvar="CMI_SWEEP_STORAGE",
            show_default=False,
        ),
    ] = None,
    study_name: Annotated[
        str | None,
        typer.Option(
            "--study-name",
            help="Study name; rerunning with it resumes the study. Default: the spec's name.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Sweep folder. Default: sweeps/STUDY_NAME."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Sampler seed (Optuna).", show_default=False)
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the study (an error if it does not exist). Its interrupted trials "
            "are marked failed and redone.",
        ),
    ] = False,
) -> None:
    """Search hyperparameters with Optuna or W&B; each trial is a normal 'cmi train' run.

    The spec is in W&B's sweep format: method (grid, random, bayes), metric,
    parameters named by 'cmi train' override keys, early_terminate (hyperband).

    The sweep folder gets study.db, trials.csv, history.png, importances.png,
    runs/ (a run folder per trial) and best.yaml: 'cmi train --config best.yaml'.

    Rerun with the same study name (or --resume) to add trials; trials
    stopped by Ctrl-C, SIGTERM or a killed worker are marked failed and redone.
    Spread one study over many
    machines with a shared database, on each machine:
    cmi sweep lr_width --storage postgresql://user:pass@host/db --study-name lr1 -n 100
    """
    from cmi_cli.tuning.report import render_trials
    from cmi_cli.tuning.spec import load_spec

    fixed = list(overrides or [])
    if spec is not None and _looks_like_override(spec):
        fixed.insert(0, spec)
        spec = None
    root = Path.cwd()
    parsed = load_spec(spec or "default", project_root=root)
    if backend is Backend.wandb:
        if workers > 1 or storage or resume:
            raise UsageError("--workers, --storage and --resume are for --backend optuna")
        from cmi_cli.tuning.wandb_backend import run_wandb_sweep

        result = run_wandb_sweep(
            parsed,
            root,
            overrides=fixed,
            n_trials=trials,
            study_name=study_name,
            sweep_dir=out,
        )
    else:
        from cmi_cli.tuning.interrupt import SweepInterrupted
        from cmi_cli.tuning.optuna_backend import run_optuna_sweep

        try:
            result = run_optuna_sweep(
                parsed,
                root,
                overrides=fixed,
                n_trials=trials,
                workers=workers,
                storage=storage,
                study_name=study_name,
                sweep_dir=out,
                seed=seed,
                show_progress=not is_quiet(),
                resume=resume,
            )
        except SweepInterrupted as exc:
            err_console().print(
                f"[bold red]interrupted[/bold red] ({exc}): the running trials are marked "
                "failed; rerun with --resume to redo them"
            )
            raise typer.Exit(exc.exit_code) from None
    render_trials(result.rows, result.metric, result.goal, out_console())
    if result.best is not None:
        out_console().print(
            f"best: trial {result.best.number}, {result.metric} {result.best.value:.4f}"
        )
    for label, path in result.files.items():
        info(f"{label}: {path}")
    if "best" in result.files:
        extra = " ".join(result.command_line_overrides)
        info(f"train it: cmi train --config {result.files['best']}{' ' + extra if extra else ''}")


def register(app: typer.Typer) -> None:
    """Register ``cmi sweep`` on the root application."""
    app.command(
        "sweep",
        rich_help_panel=PANEL,
        context_settings={"allow_interspersed_args": True},
    )(sweep_cmd)
