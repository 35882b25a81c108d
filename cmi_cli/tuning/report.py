"""The end of a sweep: trials table (rich + CSV), the best override file, and PNG plots."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cmi_cli.utils.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)
BEST_FILE = "best.yaml"
TRIALS_FILE = "trials.csv"
HISTORY_PLOT = "history.png"
IMPORTANCE_PLOT = "importances.png"


@dataclass
class TrialRow:
    """One trial as the report shows it, whichever engine ran it."""

    number: int
    state: str  # complete | pruned | failed | running
    value: float | None
    values: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    seconds: float | None = None
    overrides: list[str] = field(default_factory=list)
    error: str | None = None


def best_row(rows: Sequence[TrialRow], goal: str) -> TrialRow | None:
    """Return the complete trial with the best value (the earliest on a tie)."""
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    if not done:
        return None
    sign = -1.0 if goal == "maximize" else 1.0
    return min(done, key=lambda r: (sign * float(r.value or 0.0), r.number))


def write_trials_csv(rows: Sequence[TrialRow], path: Path, metric: str) -> Path:
    """Write one line per trial: number, state, metric, each parameter, seconds, run folder."""
    keys = sorted({k for r in rows for k in r.values})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", metric, *keys, "seconds", "run_dir", "error"])
    for r in rows:
        writer.writerow(
            [
                r.number,
                r.state,
                _cell(r.value),
                *(_cell(r.values.get(k)) for k in keys),
                _cell(r.seconds),
                r.run_dir or "",
                r.error or "",
            ]
        )
    return atomic_write_text(path, buffer.getvalue())


def render_trials(
    rows: Sequence[TrialRow], metric: str, goal: str, console: Any, limit: int = 50
) -> None:
    """Print the trials as a rich table, best first, the best one marked."""
    from rich.table import Table

    best = best_row(rows, goal)
    keys = sorted({k for r in rows for k in r.values})
    table = Table(title=f"Trials ({goal} {metric})", title_justify="left")
    for name in ("#", "state", metric, *keys, "seconds"):
        table.add_column(name, justify="left" if name == "state" else "right")
    sign = -1.0 if goal == "maximize" else 1.0

    def order(r: TrialRow) -> tuple[int, float, int]:
        return (0 if r.value is not None else 1, sign * (r.value or 0.0), r.number)

    for r in sorted(rows, key=order)[:limit]:
        style = "bold green" if best is not None and r.number == best.number else None
        table.add_row(
            str(r.number),
            r.state,
            _fmt(r.value),
            *(_fmt(r.values.get(k)) for k in keys),
            _fmt(r.seconds, 1),
            style=style,
        )
    console.print(table)
    if len(rows) > limit:
        console.print(f"({len(rows) - limit} more trials in {TRIALS_FILE})")


def overrides_to_mapping(
    overrides: Sequence[str], groups: set[str]
) -> tuple[dict[str, Any], list[str]]:
    """Turn Hydra overrides into the nested mapping ``cmi train --config`` reads.

    A group selection (``model=mini_unet``) becomes a top-level string, or a ``defaults`` entry
    when the same file also sets values inside that group; ``~group`` becomes ``group: null``.
    Overrides a config file cannot express (``+new.key=...``, ``~key`` of a value) are returned
    apart, to be passed on the command line.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    selections: dict[str, str | None] = {}
    values: dict[str, Any] = {}
    leftovers: list[str] = []
    for text in overrides:
        o = parser.parse_overrides([text])[0]
        key = str(o.key_or_group)
        if key in ("run.name", "run.dir"):
            continue
        if key in groups:
            if o.is_delete():
                selections[key] = None
            else:
                selections[key] = None if o.value() is None else str(o.value())
        elif o.is_delete() or o.is_add():
            leftovers.append(text)
        else:
            _set_dotted(values, key, _plain(o.value()))
    data: dict[str, Any] = {}
    defaults = []
    for group, option in selections.items():
        if group in values:
            defaults.append({group: option})
        else:
            data[group] = option
    if defaults:
        data["defaults"] = [*defaults, "_self_"]
    data.update(values)
    return data, leftovers


def write_best_file(
    path: Path, row: TrialRow, metric: str, study: str, groups: set[str]
) -> tuple[Path, list[str]]:
    """Write the best trial's overrides as a YAML file for ``cmi train --config``.

    Returns:
        The path and the overrides that had to stay on the command line.
    """
    data, leftovers = overrides_to_mapping(row.overrides, groups)
    header = [
        f"# Best trial of sweep '{study}': trial {row.number}, {metric} = {_fmt(row.value)}",
        f"# Reproduce it: cmi train --config {path.name}"
        + (" " + " ".join(leftovers) if leftovers else ""),
    ]
    if row.run_dir:
        header.append(f"# Its run folder: {row.run_dir}")
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    atomic_write_text(path, "\n".join(header) + "\n" + body)
    return path, leftovers


def plot_history(rows: Sequence[TrialRow], metric: str, goal: str, path: Path) -> Path | None:
    """Draw each complete trial's value and the best so far; None if no trial completed."""
    done = sorted((r for r in rows if r.value is not None), key=lambda r: r.number)
    if not done:
        return None
    pick = max if goal == "maximize" else min
    best: list[float] = []
    for r in done:
        best.append(float(r.value) if not best else pick(best[-1], float(r.value)))  # type: ignore[arg-type]
    fig, ax = _figure()
    try:
        ax.scatter([r.number for r in done], [r.value for r in done], label="trial", zorder=3)
        ax.step([r.number for r in done], best, where="post", color="tab:red", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(metric)
        ax.set_title(f"Optimisation history ({goal})")
        ax.grid(alpha=0.3)
        ax.legend()
        return _save(fig, path)
    finally:
        _close(fig)


def param_importances(rows: Sequence[TrialRow], goal: str) -> dict[str, float] | None:
    """Estimate each parameter's importance with Optuna's evaluator; None if it cannot.

    Works from the values the trials used (not the engine's internal ones), so both engines
    share it. Needs two complete trials and one parameter that varies.
    """
    import warnings

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    done = [r for r in rows if r.state == "complete" and r.value is not None]
    if len(done) < 2:
        return None
    distributions: dict[str, Any] = {}
    for key in sorted({k for r in done for k in r.values}):
        seen = [r.values.get(k) for r in done for k in [key]]
        if len({repr(v) for v in seen}) < 2:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
            distributions[key] = FloatDistribution(float(min(seen)), float(max(seen)))  # type: ignore[type-var,arg-type]
        else:
            distributions[key] = CategoricalDistribution(sorted({repr(v) for v in seen}))
    if not distributions:
        return None
    direction = optuna.study.StudyDirection.MAXIMIZE if goal == "maximize" else None
    study = optuna.create_study(direction=direction)
    for r in done:
        params = {
            k: repr(r.values.get(k))
            if isinstance(d, CategoricalDistribution)
            else float(r.values[k])
            for k, d in distributions.items()
        }
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=r.value)
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        log.info("parameter importances unavailable: %s", exc)
        return None


def plot_importances(importances: Mapping[str, float], path: Path) -> Path | None:
    """Draw importances as horizontal bars, the largest on top; None if there are none."""
    if not importances:
        return None
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = _figure()
    try:
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        for i, (_, v) in enumerate(items):
            ax.text(v, i, f" {v:.2f}", va="center")
        ax.set_xlabel("importance (sums to 1)")
        ax.set_title("Parameter importances")
        ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
        return _save(fig, path)
    finally:
        _close(fig)


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4), layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    node = target
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _plain(value: Any) -> Any:
    # Hydra's parser returns its own list/dict subclasses; YAML wants plain ones.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)
