"""The sweep spec: every W&B parameter form, its Optuna translation, and malformed specs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cmi_cli.config import compose_train_config
from cmi_cli.errors import ConfigError, UsageError
from cmi_cli.tuning.optuna_space import (
    default_trials,
    from_internal,
    grid_search_space,
    make_pruner,
    make_sampler,
    suggest_values,
    to_distribution,
)
from cmi_cli.tuning.report import overrides_to_mapping
from cmi_cli.tuning.spec import available_specs, load_spec, parse_spec
from cmi_cli.tuning.trial import (
    check_fixed_overrides,
    check_spec_keys,
    format_override,
    param_overrides,
)

GROUPS = {"data", "model", "trainer", "logger", "experiment", "debug"}


def spec_of(parameters: dict[str, Any], method: str = "random", **extra: Any):
    raw = {"method": method, "metric": {"name": "val/miou", "goal": "maximize"}}
    return parse_spec({**raw, "parameters": parameters, **extra}, source="s.yaml")


def one(body: dict[str, Any], method: str = "random"):
    return spec_of({"optim.lr": body}, method).parameters[0]


def d(name: str, **bounds: Any) -> dict[str, Any]:
    return {"distribution": name, **bounds}


F, N, C = FloatDistribution, IntDistribution, CategoricalDistribution
E4, E2, E3 = math.exp(-4), math.exp(-2), math.exp(3)
# Every W&B parameter form: (body, kind, Optuna distribution, its (low, high, log, step)).
FORMS = [
    ({"values": [1, 2, 3]}, "categorical", C, None),
    ({"value": 0.1}, "constant", C, None),
    ({"values": ["only"]}, "constant", C, None),
    ({"min": 1, "max": 5}, "int_uniform", N, (1, 5, False, 1)),
    ({"min": 0.1, "max": 0.5}, "uniform", F, (0.1, 0.5, False, None)),
    (d("int_uniform", min=2, max=9), "int_uniform", N, (2, 9, False, 1)),
    (d("uniform", min=0, max=1), "uniform", F, (0.0, 1.0, False, None)),
    (d("q_uniform", min=8, max=33, q=8), "q_uniform", N, (8, 32, False, 8)),
    (d("q_uniform", min=0.0, max=1.0, q=0.25), "q_uniform", F, (0.0, 1.0, False, 0.25)),
    (d("log_uniform_values", min=1e-4, max=1e-2), "log_uniform_values", F,
     (1e-4, 1e-2, True, None)),
    (d("log_uniform", min=-4, max=0), "log_uniform", F, (E4, 1.0, True, None)),
    (d("inv_log_uniform_values", min=0.01, max=1), "inv_log_uniform_values", F,
     (0.01, 1.0, True, None)),
    (d("inv_log_uniform", min=0, max=2), "inv_log_uniform", F, (E2, 1.0, True, None)),
    (d("q_log_uniform_values", min=16, max=256, q=16), "q_log_uniform_values", F,
     (16.0, 256.0, True, None)),
    (d("q_log_uniform", min=0, max=3, q=1), "q_log_uniform", F, (1.0, E3, True, None)),
    (d("normal", mu=0.5, sigma=0.1), "normal", F, None),
    (d("q_normal", mu=10, sigma=2, q=2), "q_normal", F, None),
    (d("log_normal", mu=0, sigma=1), "log_normal", F, None),
    (d("q_log_normal", mu=2, sigma=0.5, q=1), "q_log_normal", F, None),
    (d("categorical", values=["a", "b"]), "categorical", C, None),
]  # fmt: skip


@pytest.mark.parametrize(("body", "kind", "dist_type", "bounds"), FORMS)
def test_every_parameter_form_translates_to_an_optuna_distribution(
    body: dict[str, Any], kind: str, dist_type: type, bounds: tuple | None
) -> None:
    p = one(body)
    assert p.kind == kind
    dist = to_distribution(p)
    assert isinstance(dist, dist_type)
    if bounds is not None:
        low, high, log, step = bounds
        assert dist.low == pytest.approx(low)
        assert dist.high == pytest.approx(high)
        assert dist.log is log
        assert dist.step == step


@pytest.mark.parametrize(("body", "kind", "dist_type", "bounds"), FORMS)
def test_sampled_values_respect_the_w_and_b_meaning(
    body: dict[str, Any], kind: str, dist_type: type, bounds: tuple | None
) -> None:
    spec = spec_of({"optim.lr": body, "model.params.width": {"values": [8, 16]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = []
    for _ in range(20):
        trial = study.ask()
        seen.append(suggest_values(trial, spec).get("optim.lr"))
        study.tell(trial, 0.0)
    if kind == "constant":
        assert set(seen) == {None}  # constants are overrides, not searched
        return
    lo, hi = body.get("min"), body.get("max")
    if kind in ("log_uniform", "q_log_uniform"):
        lo, hi = math.exp(lo), math.exp(hi)
    elif kind == "inv_log_uniform":
        lo, hi = math.exp(-hi), math.exp(-lo)
    for value in seen:
        if "values" in body:
            assert value in body["values"]
        elif lo is not None:
            assert lo - 1e-9 <= value <= hi + (body.get("q") or 0) + 1e-9
        if kind.startswith("q_"):
            q = body["q"]
            assert value / q == pytest.approx(round(value / q))
        if kind == "int_uniform" or (kind == "q_uniform" and isinstance(body["q"], int)):
            assert isinstance(value, int)
        if "log_normal" in kind:
            assert value > 0
    assert len(set(seen)) > 1


def test_normal_family_maps_the_latent_quantile_to_mu_and_sigma() -> None:
    normal = one({"distribution": "normal", "mu": 3.0, "sigma": 2.0})
    assert from_internal(normal, 0.5) == pytest.approx(3.0)
    assert from_internal(normal, 0.8413447) == pytest.approx(5.0, abs=1e-4)
    log_normal = one({"distribution": "log_normal", "mu": 1.0, "sigma": 1.0})
    assert from_internal(log_normal, 0.5) == pytest.approx(math.e)
    q_normal = one({"distribution": "q_normal", "mu": 10, "sigma": 3, "q": 4})
    assert from_internal(q_normal, 0.5) == 8  # round(10 / 4) * 4, an int for an int q


def test_grid_expands_discrete_forms_and_uses_grid_sampler() -> None:
    spec = spec_of(
        {
            "optim.lr": {"values": [0.1, 0.01]},
            "model.params.width": {"distribution": "int_uniform", "min": 8, "max": 10},
            "optim.weight_decay": {"distribution": "q_uniform", "min": 0.0, "max": 0.2, "q": 0.1},
            "seed": {"value": 7},
        },
        method="grid",
    )
    space = grid_search_space(spec)
    assert space == {
        "optim.lr": [0.1, 0.01],
        "model.params.width": [8, 9, 10],
        "optim.weight_decay": [0.0, 0.1, 0.2],
    }
    assert default_trials(spec) == 18
    assert isinstance(make_sampler(spec), optuna.samplers.GridSampler)
    study = optuna.create_study(sampler=make_sampler(spec))
    points = set()

    def objective(trial: optuna.Trial) -> float:
        points.add(tuple(sorted(suggest_values(trial, spec).items())))
        return 0.0

    study.optimize(objective, n_trials=30)  # GridSampler stops the study when the grid is done
    assert len(points) == 18
    assert len(study.trials) == 18


def test_samplers_and_pruner_follow_method_and_early_terminate() -> None:
    params = {"optim.lr": {"min": 0.1, "max": 0.5}}
    assert isinstance(make_sampler(spec_of(params, "random")), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler(spec_of(params, "bayes")), optuna.samplers.TPESampler)
    assert isinstance(make_pruner(spec_of(params)), optuna.pruners.NopPruner)
    spec = spec_of(params, early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2})
    pruner = make_pruner(spec)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._min_resource == 2
    assert pruner._reduction_factor == 2
    assert default_trials(spec_of(params, run_cap=7)) == 7


def test_nested_parameters_read_as_dotted_keys() -> None:
    spec = spec_of({"optim": {"parameters": {"lr": {"values": [0.1, 0.2]}}}})
    assert [p.key for p in spec.parameters] == ["optim.lr"]


def lr(body: dict[str, Any]) -> dict[str, Any]:
    return {"parameters": {"optim.lr": body}}


BAD_SPECS = [
    ({"method": "anneal"}, "method 'anneal'"),
    ({"metric": {"goal": "maximize"}}, "metric.name"),
    ({"metric": {"name": "val/mIoU", "goal": "maximize"}}, "metric.name 'val/mIoU'"),
    ({"metric": {"name": "val/miou", "goal": "max"}}, "metric.goal"),
    (lr({"minn": 0.1}), "parameters.optim.lr: unknown key 'minn'"),
    (lr({"q": 2}), "parameters.optim.lr needs values"),
    (lr(d("gauss", min=0, max=1)), "parameters.optim.lr: unknown distribution 'gauss'"),
    (lr({"min": 0.5, "max": 0.1}), "parameters.optim.lr: min 0.5 is greater than max 0.1"),
    (lr(d("log_uniform_values", min=0, max=1)), "parameters.optim.lr: log_uniform_values"),
    (lr({"values": []}), "parameters.optim.lr: values"),
    ({"parameters": {"optim lr": {"values": [1]}}}, "'optim lr'"),
    ({"parameters": {}}, "parameters"),
    ({"early_terminate": {"type": "envelope"}}, "early_terminate.type"),
    ({"early_terminate": {"type": "hyperband", "etaa": 3}}, "early_terminate.etaa"),
    ({"parametres": {}}, "unknown key 'parametres' (did you mean 'parameters'?)"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "named"), BAD_SPECS)
def test_malformed_spec_fails_with_one_line_naming_the_key(change: dict, named: str) -> None:
    raw: dict[str, Any] = {
        "method": "random",
        "metric": {"name": "val/miou", "goal": "maximize"},
        "parameters": {"optim.lr": {"min": 0.001, "max": 0.01}},
    }
    raw.update(change)
    with pytest.raises(ConfigError) as info:
        parse_spec(raw, source="bad.yaml")
    line = info.value.one_line()
    assert named in line
    assert "bad.yaml" in line
    assert "\n" not in line


def test_grid_over_a_continuous_distribution_names_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"parameters\.optim\.lr: grid search needs"):
        spec_of({"optim.lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1}}, "grid")


def test_unknown_config_key_or_option_fails_before_any_trial(tmp_path: Path) -> None:
    spec = spec_of({"optim.lrr": {"values": [0.1, 0.2]}})
    with pytest.raises(ConfigError) as info:
        check_spec_keys(spec, [], tmp_path)
    assert "parameters.optim.lrr" in info.value.one_line()
    assert "did you mean 'optim.lr'" in info.value.one_line()
    spec = spec_of({"model": {"values": ["fast_unet", "mini_unett"]}})
    with pytest.raises(ConfigError, match=r"parameters\.model: unknown option 'mini_unett'"):
        check_spec_keys(spec, [], tmp_path)
    spec = spec_of({"optim.lr": {"min": -1.0, "max": 0.1}})
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        check_spec_keys(spec, [], tmp_path)


def test_fixed_overrides_may_not_set_searched_keys_or_run_names() -> None:
    spec = spec_of({"optim.lr": {"values": [0.1, 0.2]}, "seed": {"value": 1}})
    check_fixed_overrides(spec, ["debug=tiny", "seed=3"])
    with pytest.raises(UsageError, match=r"optim\.lr"):
        check_fixed_overrides(spec, ["optim.lr=0.5"])
    with pytest.raises(UsageError, match=r"run\.name"):
        check_fixed_overrides(spec, ["run.name=x"])
    # The command line beats a spec constant.
    assert param_overrides(spec, {"optim.lr": 0.1}, ["seed=3"]) == ["seed=3", "optim.lr=0.1"]


@pytest.mark.parametrize("value", [1e-5, 0.001, 3, True, None, "mini_unet", "1e-3", "a b", "it's"])
def test_override_values_parse_back_to_the_same_value(value: Any) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    text = format_override("k", value)
    assert OverridesParser.create().parse_overrides([text])[0].value() == value


def test_overrides_become_a_config_file_mapping() -> None:
    data, leftovers = overrides_to_mapping(
        ["debug=tiny", "~logger", "optim.lr=0.01", "model.params.width=8", "+extra.key=1"],
        GROUPS,
    )
    assert data == {
        "debug": "tiny",
        "logger": None,
        "optim": {"lr": 0.01},
        "model": {"params": {"width": 8}},
    }
    assert leftovers == ["+extra.key=1"]
    # A selection and values inside the same group: the selection moves to a defaults list.
    data, _ = overrides_to_mapping(["model=mini_unet", "model.params={}"], GROUPS)
    assert data["defaults"] == [{"model": "mini_unet"}, "_self_"]


def test_config_file_from_overrides_composes_like_the_overrides(tmp_path: Path) -> None:
    overrides = ["debug=tiny", "model=mini_unet", "optim.lr=0.02", "trainer.max_epochs=3"]
    data, _ = overrides_to_mapping(overrides, GROUPS)
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(data))
    from_file = compose_train_config(config_file=path, project_root=tmp_path)
    from_cli = compose_train_config(overrides, project_root=tmp_path)
    assert from_file == from_cli


def test_packaged_specs_are_valid(tmp_path: Path) -> None:
    assert {"default", "lr_width", "tiny"} <= set(available_specs(tmp_path))
    for name in ("default", "lr_width", "tiny"):
        spec = load_spec(name, tmp_path)
        assert spec.name == name
        check_spec_keys(spec, [], tmp_path)


def test_unknown_spec_name_suggests_a_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        load_spec("tinyy", tmp_path)
    own = tmp_path / "configs" / "sweep"
    own.mkdir(parents=True)
    (own / "mine.yaml").write_text(
        "method: grid\nmetric: {name: val/loss}\nparameters: {seed: {values: [1, 2]}}\n"
    )
    spec = load_spec("mine", tmp_path)
    assert spec.goal == "minimize"  # W&B's default goal
    assert spec.source.endswith("mine.yaml")
