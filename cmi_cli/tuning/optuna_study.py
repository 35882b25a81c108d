"""The Optuna study of a sweep: its storage, creation or resumption, and its trials as rows."""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmi_cli.console import warn
from cmi_cli.errors import ConfigError
from cmi_cli.tuning.interrupt import GRACE_PERIOD, HEARTBEAT_INTERVAL, fail_orphaned_trials
from cmi_cli.tuning.optuna_space import make_pruner, make_sampler
from cmi_cli.tuning.report import TrialRow
from cmi_cli.tuning.spec import SweepSpec

if TYPE_CHECKING:
    import optuna


POSTGRES_EXTRA_HINT = "pip install 'cmi-cli[postgres]'"
# The driver cmi-cli[postgres] installs. A bare postgresql:// URL is pinned to it, because
# SQLAlchemy's own default for that form changed (psycopg2 in 2.0, psycopg 3 in 2.1).
POSTGRES_DRIVER = "psycopg"


def storage_url(url: str) -> str:
    """Return ``url`` with a bare ``postgresql://`` (or ``postgres://``) given our driver.

    Explicit forms (``postgresql+psycopg2://``, ``postgresql+pg8000://``) are kept as given.
    """
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return f"postgresql+{POSTGRES_DRIVER}://{url[len(bare) :]}"
    return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open an RDB storage; SQLite waits for locks so parallel workers can share one file.

    Raises:
        ConfigError: If the URL is malformed, its driver is missing, or the server is unreachable.
    """
    import optuna

    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    shown = _redact(url)
    try:
        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    # The heartbeat lets a later run mark a vanished worker's trial as failed.
                    return optuna.storages.RDBStorage(
                        storage_url(url),
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=HEARTBEAT_INTERVAL,
                        grace_period=GRACE_PERIOD,
                    )
            except Exception as exc:
                # Workers that start together on an empty database race to create its
                # tables; the loser finds them made a moment later.
                if attempt == 2 or not _is_creation_race(exc):
                    raise
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")
    except ImportError as exc:  # Optuna wraps the driver's ModuleNotFoundError in its own
        missing = _missing_module(exc) or _driver_of(storage_url(url))
        raise ConfigError(
            f"storage {shown} needs the Python package '{missing}'", hint=_driver_hint(url, missing)
        ) from None
    except Exception as exc:  # SQLAlchemy's errors: bad URL, refused connection, bad login
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot open the study storage {shown}: {first}") from None


def _is_creation_race(exc: BaseException) -> bool:
    """Whether ``exc`` is another process having just created the tables or version row.

    PostgreSQL reports it as a unique violation or an existing relation, SQLite as a
    failed UNIQUE constraint (on ``alembic_version``) or an existing table.
    """
    text = str(exc)
    races = ("UniqueViolation", "already exists", "duplicate key", "UNIQUE constraint failed")
    return any(s in text for s in races)


def _missing_module(exc: BaseException | None) -> str | None:
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__
    return None


def _driver_of(url: str) -> str:
    scheme = url.split("://", 1)[0]
    return scheme.split("+", 1)[1] if "+" in scheme else scheme


def _driver_hint(url: str, missing: str) -> str:
    scheme = url.split("://", 1)[0]
    if storage_url(url) != url or scheme == f"postgresql+{POSTGRES_DRIVER}":
        return POSTGRES_EXTRA_HINT
    if scheme.startswith("postgres"):
        return (
            f"pip install {missing}, or use a plain postgresql:// URL with the driver of "
            f"{POSTGRES_EXTRA_HINT}"
        )
    return f"pip install {missing}"


def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:  # not a URL SQLAlchemy reads; shown as given minus any password
        return url.split("@")[-1]


def counted_trials(study: optuna.Study) -> int:
    """Count the trials toward the total: all but those failed by an interruption.

    A trial that ran and failed (bad metric, crash) counts; one left by Ctrl-C or a killed
    worker does not, so a rerun redoes it.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if t.state != TrialState.FAIL or "error" in t.user_attrs)


@dataclass
class SweepPlan:
    """Everything a worker needs to run trials of one study (picklable for spawn)."""

    spec: SweepSpec
    project_root: Path
    fixed: list[str]
    storage: str
    study_name: str
    sweep_dir: Path
    n_trials: int
    seed: int | None = None
    worker: int = 0

    @property
    def runs_dir(self) -> Path:
        """The folder of the trials' run folders."""
        return self.sweep_dir / "runs"


def load_or_create_study(plan: SweepPlan) -> optuna.Study:
    """Create the study, or load it when one of that name exists (resume).

    Raises:
        ConfigError: If an existing study optimises in the other direction.
    """
    import optuna

    study = optuna.create_study(
        storage=open_storage(plan.storage),
        study_name=plan.study_name,
        sampler=make_sampler(plan.spec, plan.seed),
        pruner=make_pruner(plan.spec),
        direction=_direction(plan.spec.goal),
        load_if_exists=True,
    )
    direction = study.direction.name.lower()
    if direction != plan.spec.goal:
        raise ConfigError(
            f"study '{plan.study_name}' was created to {direction}, the spec says {plan.spec.goal}",
            hint="Use another --study-name, or fix metric.goal",
        )
    orphans = fail_orphaned_trials(study)
    if orphans and not plan.worker:
        shown = ", ".join(str(n) for n in orphans)
        warn(f"trials {shown} were left running by a worker that is gone: marked failed, redone")
    spec_json = json.dumps(plan.spec.raw, sort_keys=True, default=str)
    if "spec" not in study.user_attrs:
        try:
            study.set_user_attr("spec", spec_json)
        except optuna.exceptions.StorageInternalError:
            # Another worker set it at the same moment (a unique key): theirs stands.
            if "spec" not in study.user_attrs:
                raise
    elif study.user_attrs["spec"] != spec_json:
        warn(f"study '{plan.study_name}' was started with another spec; continuing with this one")
    return study


def _direction(goal: str) -> Any:
    import optuna

    return (
        optuna.study.StudyDirection.MAXIMIZE
        if goal == "maximize"
        else (optuna.study.StudyDirection.MINIMIZE)
    )


def study_rows(study: optuna.Study) -> list[TrialRow]:
    """Return the study's trials as report rows (values as the trials used them)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        value = t.value if t.value is not None and not math.isnan(t.value) else None
        if value is None and t.intermediate_values:
            last = max(t.intermediate_values)
            value = t.intermediate_values[last] if t.state.name == "PRUNED" else None
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name.lower(),
                value=value,
                values=dict(t.user_attrs.get("values", t.params)),
                run_dir=t.user_attrs.get("run_dir"),
                seconds=seconds,
                overrides=list(t.user_attrs.get("overrides", [])),
                error=t.user_attrs.get("error"),
            )
        )
    return rows
