"""The W&B engine: one-line failure without a login, and what would be sent to W&B.

No W&B server exists here, so ``wandb.sweep``/``wandb.agent`` are replaced by recorders; the
agent's trial itself runs for real, with W&B disabled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import wandb
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.tuning.spec import load_spec, parse_spec
from cmi_cli.tuning.wandb_backend import (
    NO_LOGIN,
    run_wandb_sweep,
    values_from_wandb_config,
    wandb_sweep_config,
)

runner = CliRunner()


def _never(*_: Any, **__: Any) -> Any:
    raise AssertionError("W&B must not be contacted")


def test_no_login_fails_at_once_in_one_line(
    tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tiny_project))  # no ~/.netrc entry
    monkeypatch.setattr(wandb, "sweep", _never)
    monkeypatch.setattr(wandb, "agent", _never)
    result = runner.invoke(app, ["sweep", "tiny", "--backend", "wandb"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {NO_LOGIN}"]
    assert not (tiny_project / "sweeps").exists()


def test_offline_mode_fails_too(tiny_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "sweep", _never)
    result = runner.invoke(app, ["sweep", "tiny", "--backend", "wandb"])
    assert result.exit_code == 2
    assert "WANDB_MODE=offline" in result.output


def test_sweep_config_is_the_spec_plus_name_and_command(tmp_path: Path) -> None:
    spec = load_spec("lr_width", tmp_path)
    config = wandb_sweep_config(spec, ["debug=tiny", "logger=csv"], "lr1")
    for key in ("method", "metric", "parameters", "early_terminate"):
        assert config[key] == spec.raw[key]
    assert config["name"] == "lr1"
    assert config["command"][:5] == ["${env}", "${interpreter}", "-m", "cmi_cli", "train"]
    assert config["command"][5:] == [
        "debug=tiny",
        "logger=wandb",
        "logger.group=lr1",
        "${args_no_hyphens}",
    ]


def test_values_come_from_flat_or_nested_wandb_config() -> None:
    spec = parse_spec(
        {
            "method": "random",
            "metric": {"name": "val/loss"},
            "parameters": {
                "optim.lr": {"values": [0.1, 0.2]},
                "model": {"parameters": {"params": {"parameters": {"width": {"values": [4, 8]}}}}},
                "seed": {"value": 3},
            },
        }
    )
    config = {"optim.lr": 0.2, "model": {"params": {"width": 8}}, "seed": 3}
    assert values_from_wandb_config(spec, config) == {"optim.lr": 0.2, "model.params.width": 8}


def test_sweep_and_agent_get_the_spec_and_run_real_trials(
    tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cmi_cli.training.wandb_setup as wandb_setup

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb_setup, "wandb_logged_in", lambda: True)
    calls: dict[str, Any] = {}
    real_init = wandb.init

    def fake_sweep(sweep: dict[str, Any], entity: Any = None, project: Any = None) -> str:
        calls["sweep"] = (sweep, entity, project)
        return "abc123"

    def fake_agent(sweep_id: str, function: Any = None, entity: Any = None, **kw: Any) -> None:
        calls["agent"] = (sweep_id, entity, kw)
        # What a W&B agent does: start a run whose config holds the sweep's values.
        monkeypatch.setenv("WANDB_MODE", "disabled")
        for i, width in enumerate((8,)):
            values = {"optim.lr": 0.01, "model.params.width": width, "debug": "tiny"}
            run_id = f"run{i}"
            monkeypatch.setattr(
                wandb,
                "init",
                lambda run_id=run_id, values=values, **k: _init(real_init, run_id, values, **k),
            )
            function()

    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    monkeypatch.setattr(wandb, "agent", fake_agent)
    spec = load_spec("tiny", tiny_project)
    result = run_wandb_sweep(spec, tiny_project, overrides=["data.limit=4"], n_trials=2)

    sweep, entity, project = calls["sweep"]
    assert sweep == wandb_sweep_config(spec, ["data.limit=4"], "tiny")
    assert (entity, project) == (None, "cmi")
    assert calls["agent"] == ("abc123", None, {"project": "cmi", "count": 2})
    assert [r.state for r in result.rows] == ["complete"]
    assert [r.values["model.params.width"] for r in result.rows] == [8]
    runs = sorted(p.name for p in (tiny_project / "sweeps" / "tiny" / "runs").iterdir())
    assert runs == ["tiny-run0"]
    run_cfg = (tiny_project / "sweeps" / "tiny" / "runs" / "tiny-run0" / "config.yaml").read_text()
    assert "name: wandb" in run_cfg
    assert "group: tiny" in run_cfg
    assert (tiny_project / "sweeps" / "tiny" / "best.yaml").is_file()
    assert "logger" not in (tiny_project / "sweeps" / "tiny" / "best.yaml").read_text()


def _init(real_init: Any, run_id: str, values: dict[str, Any], **kwargs: Any) -> Any:
    return real_init(id=run_id, config=values, mode="disabled", **kwargs)
