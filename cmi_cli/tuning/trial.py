"""One sweep trial: parameter values -> Hydra overrides -> a normal ``cmi train`` run -> a score.

Both engines (Optuna, W&B) call :func:`run_trial`; what differs is only where the values come
from and where the score goes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmi_cli.errors import ConfigError, UsageError
from cmi_cli.tuning.spec import SweepSpec


@dataclass
class TrialOutcome:
    """What one finished trial produced."""

    value: float | None
    run_dir: Path
    overrides: list[str]


def format_override(key: str, value: Any) -> str:
    """Return ``key=value`` as a Hydra override that parses back to ``value``.

    Strings are quoted only where the bare text would read as another type or not parse.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"{key}={value!r}"
    text = str(value)
    parser = OverridesParser.create()
    try:
        if parser.parse_overrides([f"{key}={text}"])[0].value() == text:
            return f"{key}={text}"
    except Exception:  # any parse failure means the bare text needs quotes
        pass
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{escaped}'"


def override_key(override: str) -> str:
    """Return the dotted key an override sets (``~logger`` -> ``logger``)."""
    return override.lstrip("~+").split("=", 1)[0].strip()


def param_overrides(spec: SweepSpec, values: Mapping[str, Any], fixed: Sequence[str]) -> list[str]:
    """Return the overrides of one trial: fixed ones, then spec constants, then sampled values.

    A constant that the fixed overrides also set is left to them: the command line wins.
    """
    fixed_keys = {override_key(o) for o in fixed}
    out = list(fixed)
    out += [format_override(k, v) for k, v in spec.constants.items() if k not in fixed_keys]
    out += [format_override(k, v) for k, v in values.items()]
    return out


def check_fixed_overrides(spec: SweepSpec, fixed: Sequence[str]) -> None:
    """Refuse fixed overrides that set a searched parameter or the run's name and folder.

    Raises:
        UsageError: Naming the clashing key.
    """
    searched = {p.key for p in spec.searched}
    for override in fixed:
        key = override_key(override)
        if key in searched:
            raise UsageError(
                f"override '{override}' sets '{key}', which the sweep searches",
                hint="Drop it, or remove the parameter from the spec",
            )
        if key in ("run.name", "run.dir"):
            raise UsageError(
                f"override '{override}': a sweep names its trials' runs itself",
                hint="Use --out to choose where the sweep and its runs go",
            )


def sample_values(spec: SweepSpec) -> list[dict[str, Any]]:
    """Return value sets that together touch every parameter's extremes and every option."""
    first: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    for p in spec.searched:
        if p.values:
            first[p.key] = p.values[0]
            samples += [{p.key: v} for v in p.values[1:]]
        elif p.low is not None and p.high is not None:
            low, high = _bound_values(p.kind, p.low, p.high)
            first[p.key] = low
            samples.append({p.key: high})
        else:
            first[p.key] = p.mu
    return [first, *samples]


def _bound_values(kind: str, low: float, high: float) -> tuple[Any, Any]:
    if kind in ("log_uniform", "q_log_uniform"):
        return math.exp(low), math.exp(high)
    if kind == "inv_log_uniform":
        return math.exp(-high), math.exp(-low)
    return low, high


def check_spec_keys(spec: SweepSpec, fixed: Sequence[str], project_root: Path) -> None:
    """Compose the training config with sample values so a bad key fails before any trial.

    Every categorical option is tried (a misspelt group option fails too), and numeric ranges
    at both ends.

    Raises:
        ConfigError: Naming the parameter and the composition error.
    """
    from cmi_cli.config import compose_train_config, validate_train_config

    base = sample_values(spec)
    for extra in base:
        values = {**base[0], **extra}
        overrides = param_overrides(spec, values, fixed)
        try:
            validate_train_config(compose_train_config(overrides, project_root=project_root))
        except ConfigError as exc:
            culprit = _culprit(spec, values, exc.message)
            # A bad fixed override is the command line's fault, not the spec's.
            where = f"sweep spec {spec.source}: {culprit}" if culprit else ""
            raise ConfigError(
                f"{where}{exc.message}",
                hint=exc.hint
                or "Parameters are override keys of 'cmi train' (see cmi train --cfg)",
            ) from None


def _culprit(spec: SweepSpec, values: Mapping[str, Any], message: str) -> str:
    for key in [*values, *spec.constants]:
        if f"'{key}'" in message or f"'{values.get(key, spec.constants.get(key))}'" in message:
            return f"parameters.{key}: "
    return ""


def compose_trial_config(
    overrides: Sequence[str], project_root: Path, run_name: str, runs_dir: Path, group: str
) -> Any:
    """Compose one trial's config; its run goes to ``runs_dir/run_name``, W&B runs to ``group``."""
    from omegaconf import OmegaConf

    from cmi_cli.config import compose_train_config

    try:
        run_dir: Path | str = runs_dir.resolve().relative_to(project_root.resolve())
    except ValueError:
        run_dir = runs_dir.resolve()
    cfg = compose_train_config(
        [
            *overrides,
            format_override("run.name", run_name),
            format_override("run.dir", str(run_dir)),
        ],
        project_root=project_root,
    )
    if cfg.logger.get("name") == "wandb" and not cfg.logger.get("group"):
        OmegaConf.update(cfg, "logger.group", group)
    return cfg


def metric_value(history: Sequence[Mapping[str, Any]], metric: str, goal: str) -> float | None:
    """Return the best value of ``metric`` over a run's epochs (None if it was never logged)."""
    seen = [float(r[metric]) for r in history if r.get(metric) is not None]
    seen = [v for v in seen if not math.isnan(v)]
    if not seen:
        return None
    return max(seen) if goal == "maximize" else min(seen)


def free_run_name(runs_dir: Path, name: str) -> str:
    """Return ``name``, or ``name-2``, ... if a folder of that name already exists."""
    candidate, n = name, 1
    while (runs_dir / candidate).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def run_trial(
    spec: SweepSpec,
    values: Mapping[str, Any],
    *,
    fixed: Sequence[str],
    project_root: Path,
    run_name: str,
    runs_dir: Path,
    group: str,
    extra_callbacks: list[Any] | None = None,
) -> TrialOutcome:
    """Train one trial as a normal run and return its score (the best epoch's metric).

    Raises:
        CmiError: From composition or training (bad data, bad config); the sweep stops.
    """
    from cmi_cli.training.train import train

    overrides = param_overrides(spec, values, fixed)
    name = free_run_name(runs_dir, run_name)
    cfg = compose_trial_config(overrides, project_root, name, runs_dir, group)
    result = train(cfg, project_root, show_progress=False, extra_callbacks=extra_callbacks)
    return TrialOutcome(
        value=metric_value(result.history, spec.metric, spec.goal),
        run_dir=result.run_dir,
        overrides=overrides,
    )
