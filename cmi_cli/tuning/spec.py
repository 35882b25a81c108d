"""The sweep spec: W&B's sweep format, read once and checked before any trial runs.

A spec is a YAML mapping::

    method: random                      # grid | random | bayes
    metric: {name: val/miou, goal: maximize}
    early_terminate: {type: hyperband, min_iter: 2, eta: 3}   # optional
    parameters:
      optim.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
      model.params.width: {values: [8, 16, 32]}
      debug: {value: tiny}

Parameter names are Hydra override keys of ``cmi train`` (a group name selects an option).
Nested ``parameters:`` blocks are read as dotted keys. Without ``distribution``, ``values`` is
categorical, ``value`` constant, and ``min``/``max`` int_uniform when both are integers, else
uniform, as in W&B.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cmi_cli.errors import ConfigError

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
# The epoch metrics a training run records (history.csv); a sweep can only optimise these.
METRICS = ("val/miou", "val/loss", "val/pixel_acc", "val/mean_class_acc", "train/loss")
TOP_KEYS = (
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "name",
    "description",
    "program",
    "command",
    "project",
    "entity",
    "run_cap",
)
PARAM_KEYS = ("values", "value", "distribution", "min", "max", "q", "mu", "sigma", "probabilities")
# W&B's distributions; ``a``/``b`` of beta are not read, so beta is not listed.
DISTRIBUTIONS = (
    "constant",
    "categorical",
    "categorical_w_probabilities",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
)
BOUNDED = {d for d in DISTRIBUTIONS if "uniform" in d}
NORMAL = {"normal", "q_normal", "log_normal", "q_log_normal"}
EARLY_TERMINATE_KEYS = ("type", "min_iter", "max_iter", "s", "eta", "strict")
_KEY = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_0-9][\w-]*)*$")
SPEC_HINT = "See docs/sweeps.md for the spec format"


@dataclass(frozen=True)
class ParamSpec:
    """One searched (or constant) parameter of a sweep."""

    key: str
    kind: str
    values: tuple[Any, ...] = ()
    value: Any = None
    low: float | None = None
    high: float | None = None
    q: float | None = None
    mu: float = 0.0
    sigma: float = 1.0

    @property
    def is_constant(self) -> bool:
        """Whether the parameter has one value only."""
        return self.kind == "constant"


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, checked sweep spec."""

    method: str
    metric: str
    goal: str
    parameters: tuple[ParamSpec, ...]
    early_terminate: dict[str, Any] | None = None
    name: str | None = None
    run_cap: int | None = None
    source: str = "<spec>"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def searched(self) -> tuple[ParamSpec, ...]:
        """The parameters that vary between trials."""
        return tuple(p for p in self.parameters if not p.is_constant)

    @property
    def constants(self) -> dict[str, Any]:
        """The parameters fixed by the spec, as key -> value."""
        return {p.key: p.value for p in self.parameters if p.is_constant}


def sweep_config_dirs(project_root: Path | None = None) -> list[Path]:
    """Return the folders searched for named specs: the project's, then the packaged one."""
    from cmi_cli.config import packaged_config_dir

    root = Path(project_root) if project_root is not None else Path.cwd()
    folders = [root / "configs" / "sweep", packaged_config_dir() / "sweep"]
    unique: list[Path] = []
    for folder in folders:
        if folder.is_dir() and all(folder.resolve() != u.resolve() for u in unique):
            unique.append(folder)
    return unique


def available_specs(project_root: Path | None = None) -> list[str]:
    """Return the names of the specs in the project's and the packaged ``configs/sweep``."""
    return sorted({p.stem for d in sweep_config_dirs(project_root) for p in d.glob("*.yaml")})


def resolve_spec_path(spec: str | Path, project_root: Path | None = None) -> Path:
    """Find a spec given as a path or as a name in ``configs/sweep``.

    Raises:
        ConfigError: If neither a file nor a named spec exists.
    """
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix in ("", ".yaml", ".yml") and len(path.parts) == 1:
        for folder in sweep_config_dirs(project_root):
            for candidate in (folder / f"{path.stem}.yaml", folder / f"{path.stem}.yml"):
                if candidate.is_file():
                    return candidate
    names = available_specs(project_root)
    close = difflib.get_close_matches(path.stem, names, n=1)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(
        f"sweep spec '{spec}' not found ({suggestion}named specs: {', '.join(names) or 'none'})",
        hint="Pass a YAML file or the name of one in configs/sweep/",
    )


def load_spec(spec: str | Path, project_root: Path | None = None) -> SweepSpec:
    """Read and check a sweep spec from a path or a name in ``configs/sweep``.

    Raises:
        ConfigError: If the file is missing, not YAML, or malformed (naming the bad key).
    """
    path = resolve_spec_path(spec, project_root)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot parse sweep spec {path}: {first}") from None
    parsed = parse_spec(raw, source=str(path))
    if parsed.name is None:
        parsed = SweepSpec(**{**parsed.__dict__, "name": path.stem})
    return parsed


def parse_spec(raw: Any, source: str = "<spec>") -> SweepSpec:
    """Check a spec mapping and return it parsed.

    Raises:
        ConfigError: One line naming the first bad key and what it accepts.
    """

    def fail(message: str) -> ConfigError:
        return ConfigError(f"sweep spec {source}: {message}", hint=SPEC_HINT)

    if not isinstance(raw, Mapping):
        raise fail(f"must be a YAML mapping, not {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            raise fail(f"unknown key '{key}'{_did_you_mean(str(key), TOP_KEYS)}")
    method = raw.get("method")
    if method not in METHODS:
        shown = "missing" if method is None else f"'{method}' is unknown"
        raise fail(f"method {shown} (use grid, random or bayes)")
    metric = raw.get("metric")
    if not isinstance(metric, Mapping) or not metric.get("name"):
        raise fail(f"metric.name is missing (one of {', '.join(METRICS)})")
    for key in metric:
        if key not in ("name", "goal", "target"):
            raise fail(f"unknown key 'metric.{key}'")
    name = str(metric["name"])
    if name not in METRICS:
        raise fail(
            f"metric.name '{name}' is not a training metric{_did_you_mean(name, METRICS)} "
            f"(one of {', '.join(METRICS)})"
        )
    goal = str(metric.get("goal", "minimize"))
    if goal not in GOALS:
        raise fail(f"metric.goal '{goal}' is unknown (use minimize or maximize)")
    parameters = raw.get("parameters")
    if not isinstance(parameters, Mapping) or not parameters:
        raise fail("parameters is missing or empty (a mapping of override keys)")
    params = tuple(_parse_param(k, v, fail) for k, v in _flatten_parameters(parameters, ""))
    if method == "grid":
        for p in params:
            grid_values(p, source)
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise fail(f"run_cap must be a positive integer, got {run_cap!r}")
    spec_name = raw.get("name")
    return SweepSpec(
        method=str(method),
        metric=name,
        goal=goal,
        parameters=params,
        early_terminate=_parse_early_terminate(raw.get("early_terminate"), fail),
        name=str(spec_name) if spec_name else None,
        run_cap=run_cap,
        source=source,
        raw=dict(raw),
    )


def grid_values(param: ParamSpec, source: str = "<spec>") -> list[Any]:
    """Return every value a grid search tries for ``param``.

    Raises:
        ConfigError: If the parameter is continuous (a grid needs a finite set).
    """
    if param.kind == "constant":
        return [param.value]
    if param.kind in ("categorical", "categorical_w_probabilities"):
        return list(param.values)
    if param.kind == "int_uniform":
        assert param.low is not None
        assert param.high is not None
        return list(range(int(param.low), int(param.high) + 1))
    if param.kind == "q_uniform":
        assert param.low is not None
        assert param.high is not None
        assert param.q is not None
        count = math.floor((param.high - param.low) / param.q + 1e-9) + 1
        return [_quantize(param.low + i * param.q, param.q) for i in range(count)]
    raise ConfigError(
        f"sweep spec {source}: parameters.{param.key}: grid search needs values, value, "
        f"int_uniform or q_uniform, not {param.kind}",
        hint="Give a list of values, or use method: random or bayes",
    )


def _quantize(value: float, q: float) -> float | int:
    out = round(value / q) * q
    if float(q).is_integer() and isinstance(q, int):
        return int(out)
    # Round away binary noise such as 0.30000000000000004.
    return float(f"{out:.12g}")


def _flatten_parameters(parameters: Mapping[Any, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, body in parameters.items():
        dotted = f"{prefix}{key}"
        if isinstance(body, Mapping) and set(body) == {"parameters"}:
            inner = body["parameters"]
            if isinstance(inner, Mapping) and inner:
                yield from _flatten_parameters(inner, f"{dotted}.")
                continue
        yield dotted, body


def _parse_param(key: str, body: Any, fail: Any) -> ParamSpec:
    where = f"parameters.{key}"
    if not _KEY.match(key):
        raise fail(f"'{key}' is not a config key (write dotted keys such as optim.lr)")
    if not isinstance(body, Mapping):
        raise fail(f"{where} must be a mapping with values, value or distribution")
    for k in body:
        if k not in PARAM_KEYS:
            raise fail(f"{where}: unknown key '{k}'{_did_you_mean(str(k), PARAM_KEYS)}")
    dist = body.get("distribution")
    if dist is None:
        dist = _infer_distribution(body)
        if dist is None:
            raise fail(f"{where} needs values, value, or distribution with min and max")
    if dist not in DISTRIBUTIONS:
        raise fail(
            f"{where}: unknown distribution '{dist}'{_did_you_mean(str(dist), DISTRIBUTIONS)}"
        )
    if dist == "constant":
        if "value" not in body:
            raise fail(f"{where}: a constant needs 'value'")
        return ParamSpec(key=key, kind="constant", value=_check_scalar(body["value"], where, fail))
    if dist in ("categorical", "categorical_w_probabilities"):
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise fail(f"{where}: values must be a non-empty list")
        checked = tuple(_check_scalar(v, where, fail) for v in values)
        if len(checked) == 1:
            return ParamSpec(key=key, kind="constant", value=checked[0])
        return ParamSpec(key=key, kind=dist, values=checked)
    if dist in BOUNDED:
        return _bounded(key, str(dist), body, fail)
    mu, sigma = body.get("mu", 0.0), body.get("sigma", 1.0)
    if not _is_number(mu) or not _is_number(sigma) or sigma <= 0:
        raise fail(f"{where}: {dist} needs a number mu and a number sigma > 0")
    q = _check_q(body, where, dist, fail)
    return ParamSpec(key=key, kind=str(dist), mu=float(mu), sigma=float(sigma), q=q)


def _bounded(key: str, dist: str, body: Mapping[str, Any], fail: Any) -> ParamSpec:
    where = f"parameters.{key}"
    low, high = body.get("min"), body.get("max")
    if low is None or high is None:
        raise fail(f"{where}: {dist} needs min and max")
    if not _is_number(low) or not _is_number(high):
        raise fail(f"{where}: min and max must be numbers, got {low!r} and {high!r}")
    if low > high:
        raise fail(f"{where}: min {low} is greater than max {high}")
    if dist == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
        raise fail(f"{where}: int_uniform needs integer min and max")
    if dist.endswith("_values") and low <= 0:
        raise fail(f"{where}: {dist} needs min > 0 (the values themselves are bounds)")
    q = _check_q(body, where, dist, fail)
    return ParamSpec(key=key, kind=dist, low=low, high=high, q=q)


def _check_q(body: Mapping[str, Any], where: str, dist: Any, fail: Any) -> float | None:
    if not str(dist).startswith("q_"):
        return None
    q = body.get("q", 1)
    if not _is_number(q) or q <= 0:
        raise fail(f"{where}: q must be a number > 0, got {q!r}")
    return float(q) if not isinstance(q, int) else q


def _infer_distribution(body: Mapping[str, Any]) -> str | None:
    if "values" in body:
        return "categorical"
    if "value" in body:
        return "constant"
    if "min" in body and "max" in body:
        both_int = all(
            isinstance(body[k], int) and not isinstance(body[k], bool) for k in ("min", "max")
        )
        return "int_uniform" if both_int else "uniform"
    return None


def _check_scalar(value: Any, where: str, fail: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise fail(f"{where}: values must be numbers, strings, booleans or null, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_early_terminate(raw: Any, fail: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise fail("early_terminate must be a mapping such as {type: hyperband, min_iter: 2}")
    for key in raw:
        if key not in EARLY_TERMINATE_KEYS:
            close = _did_you_mean(str(key), EARLY_TERMINATE_KEYS)
            raise fail(f"unknown key 'early_terminate.{key}'{close}")
    if raw.get("type") != "hyperband":
        raise fail(f"early_terminate.type '{raw.get('type')}' is not supported (use hyperband)")
    for key in ("min_iter", "max_iter", "s"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise fail(f"early_terminate.{key} must be a positive integer, got {value!r}")
    eta = raw.get("eta", 3)
    if not isinstance(eta, int) or eta < 2:
        raise fail(f"early_terminate.eta must be an integer >= 2, got {eta!r}")
    low, high = raw.get("min_iter"), raw.get("max_iter")
    if low is not None and high is not None and low > high:
        raise fail(f"early_terminate.min_iter {low} is greater than max_iter {high}")
    return dict(raw)


def _did_you_mean(word: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
