"""What every sweep leaves in its folder, whichever engine ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cmi_cli.console import info, warn
from cmi_cli.errors import ConfigError
from cmi_cli.tuning.report import (
    BEST_FILE,
    HISTORY_PLOT,
    IMPORTANCE_PLOT,
    TRIALS_FILE,
    TrialRow,
    best_row,
    param_importances,
    plot_history,
    plot_importances,
    write_best_file,
    write_trials_csv,
)
from cmi_cli.tuning.spec import SweepSpec


@dataclass
class SweepResult:
    """What a sweep left behind."""

    study_name: str
    sweep_dir: Path
    storage: str
    metric: str
    goal: str
    rows: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    files: dict[str, Path] = field(default_factory=dict)
    # Overrides of the best trial that a --config file cannot hold (pass them on the CLI).
    command_line_overrides: list[str] = field(default_factory=list)


def config_groups(project_root: Path) -> set[str]:
    """Return the names of the ``cmi train`` config groups (packaged and project folders)."""
    from cmi_cli.config import PRIMARY_GROUPS, packaged_config_dir

    groups = set(PRIMARY_GROUPS)
    for folder in (packaged_config_dir(), project_root / "configs"):
        if folder.is_dir():
            groups |= {
                d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("_")
            }
    return groups - {"sweep"}


def finish_sweep(
    rows: list[TrialRow],
    spec: SweepSpec,
    study_name: str,
    sweep_dir: Path,
    storage: str,
    project_root: Path,
) -> SweepResult:
    """Write trials.csv, best.yaml (checked by composing it), history.png and importances.png."""
    from cmi_cli.config import compose_train_config

    result = SweepResult(study_name, sweep_dir, storage, spec.metric, spec.goal, rows=rows)
    result.files["trials"] = write_trials_csv(rows, sweep_dir / TRIALS_FILE, spec.metric)
    best = best_row(rows, spec.goal)
    result.best = best
    if best is None:
        warn("no trial completed: no best.yaml")
    else:
        path, leftovers = write_best_file(
            sweep_dir / BEST_FILE, best, spec.metric, study_name, config_groups(project_root)
        )
        result.files["best"] = path
        result.command_line_overrides = leftovers
        try:
            compose_train_config(leftovers, config_file=path, project_root=project_root)
        except ConfigError as exc:
            warn(f"{path} does not compose as is: {exc.one_line()}")
    history = plot_history(rows, spec.metric, spec.goal, sweep_dir / HISTORY_PLOT)
    if history is not None:
        result.files["history"] = history
    importances = param_importances(rows, spec.goal)
    drawn = plot_importances(importances or {}, sweep_dir / IMPORTANCE_PLOT)
    if drawn is not None:
        result.files["importances"] = drawn
    else:
        info("parameter importances need 2 complete trials with a varying parameter: skipped")
    return result
