"""The spec in Optuna's terms: distributions, grid search space, sampler and pruner."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from cmi_cli.tuning.spec import ParamSpec, SweepSpec, grid_values

if TYPE_CHECKING:
    import optuna

DEFAULT_TRIALS = 10
# Latent uniform bounds for the normal family: the inverse CDF is infinite at 0 and 1.
_EPS = 1e-6


def to_distribution(p: ParamSpec, method: str = "random") -> optuna.distributions.BaseDistribution:
    """Return the Optuna distribution a spec parameter is sampled from.

    Under grid search every parameter is categorical over its grid values. The normal family
    and the exponent forms (``log_uniform``, ``inv_log_uniform``) are sampled through a latent
    Optuna parameter that :func:`from_internal` maps to the value a trial uses.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if method == "grid" or p.kind in ("constant", "categorical", "categorical_w_probabilities"):
        return CategoricalDistribution(grid_values(p))
    kind, low, high = p.kind, p.low, p.high
    if kind in ("normal", "q_normal", "log_normal", "q_log_normal"):
        return FloatDistribution(_EPS, 1.0 - _EPS)
    assert low is not None
    assert high is not None
    if kind == "int_uniform":
        return IntDistribution(int(low), int(high))
    if kind == "uniform":
        return FloatDistribution(float(low), float(high))
    if kind == "q_uniform":
        assert p.q is not None
        count = math.floor((high - low) / p.q + 1e-9)
        if all(isinstance(v, int) for v in (low, high, p.q)):
            return IntDistribution(int(low), int(low + count * p.q), step=int(p.q))
        return FloatDistribution(float(low), float(low + count * p.q), step=float(p.q))
    if kind in ("log_uniform", "q_log_uniform"):
        return FloatDistribution(math.exp(low), math.exp(high), log=True)
    if kind == "inv_log_uniform":
        return FloatDistribution(math.exp(-high), math.exp(-low), log=True)
    # log_uniform_values, q_log_uniform_values, inv_log_uniform_values: bounds are values.
    return FloatDistribution(float(low), float(high), log=True)


def from_internal(p: ParamSpec, raw: Any, method: str = "random") -> Any:
    """Map a sampled Optuna value to the value the trial's override uses."""
    if method == "grid" or p.values or p.is_constant:
        return raw
    kind = p.kind
    value = raw
    if kind in ("normal", "q_normal", "log_normal", "q_log_normal"):
        value = statistics.NormalDist(p.mu, p.sigma).inv_cdf(float(raw))
        if "log" in kind:
            value = math.exp(value)
    if kind.startswith("q_") and kind != "q_uniform" and p.q is not None:
        value = round(value / p.q) * p.q
        value = int(value) if isinstance(p.q, int) else float(f"{value:.12g}")
    if isinstance(value, float) and kind != "int_uniform":
        value = float(f"{value:.12g}")
    return value


def suggest_values(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Sample one value per searched parameter through the trial's public suggest API."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    values: dict[str, Any] = {}
    for p in spec.searched:
        dist = to_distribution(p, spec.method)
        if isinstance(dist, CategoricalDistribution):
            raw: Any = trial.suggest_categorical(p.key, list(dist.choices))
        elif isinstance(dist, IntDistribution):
            raw = trial.suggest_int(p.key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            assert isinstance(dist, FloatDistribution)
            raw = trial.suggest_float(p.key, dist.low, dist.high, step=dist.step, log=dist.log)
        values[p.key] = from_internal(p, raw, spec.method)
    return values


def grid_search_space(spec: SweepSpec) -> dict[str, list[Any]]:
    """Return GridSampler's search space: every searched parameter's grid values."""
    return {p.key: grid_values(p, spec.source) for p in spec.searched}


def grid_size(spec: SweepSpec) -> int:
    """Return the number of points of the spec's grid."""
    return math.prod(len(v) for v in grid_search_space(spec).values())


def make_sampler(spec: SweepSpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """Return the sampler of the method: GridSampler, RandomSampler or TPESampler (bayes)."""
    import optuna

    if spec.method == "grid":
        return optuna.samplers.GridSampler(grid_search_space(spec), seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """HyperbandPruner when the spec has ``early_terminate``; otherwise no pruning.

    W&B's ``min_iter``/``max_iter``/``eta`` map to ``min_resource``/``max_resource``/
    ``reduction_factor`` (in epochs); Optuna derives the bracket count that W&B's ``s`` sets.
    """
    import optuna

    et = spec.early_terminate
    if not et:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(
        min_resource=int(et.get("min_iter") or 1),
        max_resource=int(et["max_iter"]) if et.get("max_iter") else "auto",
        reduction_factor=int(et.get("eta", 3)),
    )


def default_trials(spec: SweepSpec) -> int:
    """The study's total when --trials is not given: the grid's size, the spec's run_cap, or 10."""
    if spec.method == "grid":
        return grid_size(spec)
    return spec.run_cap or DEFAULT_TRIALS
