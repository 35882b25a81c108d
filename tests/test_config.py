from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra

from cmi_cli.config import (
    compose_train_config,
    config_to_yaml,
    packaged_config_dir,
    validate_train_config,
)
from cmi_cli.errors import ConfigError

PACKAGED = packaged_config_dir()

# Stand-ins for group options other modules ship; written into the temp project only while the
# packaged tree lacks them, so these tests use the real files once they exist.
STUBS = {
    "data/sample.yaml": {
        "root": "data/sample",
        "image_size": 64,
        "num_classes": 104,
        "batch_size": 8,
        "num_workers": 2,
        "pin_memory": True,
        "persistent_workers": True,
        "prefetch_factor": 2,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "augment": {"hflip": True, "scale": [0.8, 1.2], "color_jitter": 0.1},
        "train_split": "train",
        "val_split": "test",
        "limit": None,
    },
    "model/fast_unet.yaml": {"name": "fast_unet", "params": {"width": 16}},
    "model/mini_unet.yaml": {"name": "mini_unet", "params": {}},
}


def write_yaml(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, content in STUBS.items():
        if not (PACKAGED / name).is_file():
            write_yaml(root / "configs" / name, content)
    write_yaml(root / "configs/model/custom.yaml", {"name": "custom", "params": {"depth": 2}})
    (root / "configs").mkdir(parents=True, exist_ok=True)
    return root


def compose(project: Path, overrides: list[str] | None = None, config_file: Path | None = None):
    return compose_train_config(overrides, config_file=config_file, project_root=project)


def test_default_composition_has_groups_and_keys(project: Path) -> None:
    cfg = compose(project)
    assert {"data", "model", "trainer", "logger", "seed", "run", "optim", "loss"} <= set(cfg)
    assert {"ckpt_path", "compile", "early_stopping", "checkpoint", "num_prediction_images"} <= set(
        cfg
    )
    assert "hydra" not in cfg
    assert "experiment" not in cfg
    assert cfg.model.name == "fast_unet"
    assert cfg.logger.name == "csv"
    assert cfg.trainer.max_epochs == 30
    assert cfg.trainer.precision == "32-true"
    assert cfg.optim.name == "adamw"
    assert cfg.optim.lr == pytest.approx(4e-3)
    assert cfg.loss.ignore_index == 255
    assert cfg.early_stopping.monitor == "val/miou"
    assert cfg.run.dir == "runs"
    assert cfg.run.name is None
    assert "batch_size" in cfg.data
    validate_train_config(cfg)


def test_composed_config_is_struct(project: Path) -> None:
    cfg = compose(project)
    with pytest.raises(AttributeError):
        _ = cfg.trainer.max_epoch


def test_project_group_file_shadows_packaged(project: Path) -> None:
    packaged = yaml.safe_load((PACKAGED / "trainer/default.yaml").read_text())
    write_yaml(project / "configs/trainer/default.yaml", {**packaged, "max_epochs": 7})
    assert compose(project).trainer.max_epochs == 7


def test_project_train_yaml_beats_packaged_primary(project: Path) -> None:
    write_yaml(project / "configs/train.yaml", {"seed": 7, "optim": {"lr": 0.01}})
    cfg = compose(project)
    assert cfg.seed == 7
    assert cfg.optim.lr == pytest.approx(0.01)
    assert cfg.optim.weight_decay == pytest.approx(1e-4)  # untouched siblings stay


def test_config_file_beats_project_train_yaml(project: Path, tmp_path: Path) -> None:
    write_yaml(project / "configs/train.yaml", {"seed": 7, "model": "mini_unet"})
    file = write_yaml(tmp_path / "run.yaml", {"seed": 8, "model": "custom"})
    cfg = compose(project, config_file=file)
    assert cfg.seed == 8
    assert cfg.model.name == "custom"


def test_overrides_beat_config_file(project: Path, tmp_path: Path) -> None:
    file = write_yaml(tmp_path / "run.yaml", {"optim": {"lr": 0.02}, "model": "mini_unet"})
    cfg = compose(project, ["optim.lr=0.5", "model=fast_unet"], config_file=file)
    assert cfg.optim.lr == pytest.approx(0.5)
    assert cfg.model.name == "fast_unet"


def test_files_beat_presets_they_select(project: Path, tmp_path: Path) -> None:
    file = write_yaml(tmp_path / "run.yaml", {"experiment": "fast", "optim": {"lr": 0.02}})
    cfg = compose(project, config_file=file)
    assert cfg.optim.scheduler == "onecycle"  # from the preset
    assert cfg.optim.lr == pytest.approx(0.02)  # the file's own value wins


def test_config_file_defaults_list_selects_groups(project: Path, tmp_path: Path) -> None:
    file = write_yaml(
        tmp_path / "run.yaml",
        {
            "defaults": [{"override /model": "custom"}, {"logger": "wandb"}, "_self_"],
            "model": {"params": {"depth": 5}},
        },
    )
    cfg = compose(project, config_file=file)
    assert cfg.model.name == "custom"
    assert cfg.model.params.depth == 5
    assert cfg.logger.name == "wandb"


def test_project_group_option_is_selectable(project: Path) -> None:
    cfg = compose(project, ["model=custom"])
    assert cfg.model.name == "custom"
    assert cfg.model.params.depth == 2


def test_experiment_presets_apply(project: Path) -> None:
    baseline = compose(project, ["experiment=baseline"])
    assert baseline.model.name == "mini_unet"
    fast = compose(project, ["+experiment=fast"])
    assert fast.model.name == "fast_unet"
    assert fast.optim.scheduler == "onecycle"
    assert fast.loss.dice_weight == pytest.approx(0.5)
    assert fast.trainer.max_epochs == 20
    # A selection on the command line beats the preset's own group override.
    assert compose(project, ["experiment=baseline", "model=custom"]).model.name == "custom"


def test_debug_presets_apply(project: Path) -> None:
    tiny = compose(project, ["debug=tiny"])
    assert (tiny.data.image_size, tiny.data.limit, tiny.data.num_workers) == (32, 8, 0)
    assert tiny.trainer.max_epochs == 1
    assert tiny.trainer.accelerator == "cpu"
    assert tiny.logger.name == "none"
    assert compose(project, ["+debug=fast_dev_run"]).trainer.fast_dev_run is True
    assert compose(project, ["debug=overfit"]).trainer.overfit_batches == 2
    assert compose(project, ["debug=profiler"]).trainer.profiler == "simple"
    # Debug comes after the experiment, so it has the last word on shared keys.
    both = compose(project, ["experiment=fast", "debug=tiny"])
    assert both.trainer.max_epochs == 1
    assert both.optim.scheduler == "onecycle"


@pytest.mark.parametrize("option", ["default", "cpu", "gpu", "ddp", "ddp_cpu"])
def test_every_trainer_option_validates(project: Path, option: str) -> None:
    cfg = compose(project, [f"trainer={option}"])
    validate_train_config(cfg)
    if option == "ddp_cpu":
        assert (cfg.trainer.accelerator, cfg.trainer.strategy, cfg.trainer.devices) == (
            "cpu",
            "ddp",
            2,
        )
    if option == "gpu":
        assert cfg.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("overrides", [["logger=wandb"], ["logger=none"], ["~logger"]])
def test_logger_options(project: Path, overrides: list[str]) -> None:
    cfg = compose(project, overrides)
    validate_train_config(cfg)
    if overrides == ["logger=wandb"]:
        assert cfg.logger.project == "cmi"
        assert cfg.logger.mode is None
    else:
        assert cfg.logger.name == "none"


def test_unknown_key_suggests_the_close_one(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        compose(project, ["trainer.max_epoch=5"])
    assert info.value.one_line() == (
        "unknown config key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)"
    )


def test_unknown_group_option_lists_options(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        compose(project, ["model=fast_unett"])
    assert info.value.one_line() == (
        "unknown option 'fast_unett' for config group 'model' "
        "(did you mean 'fast_unet'? options: cnn, custom, fast_unet, mini_unet, mobile, smp, "
        "transformer)"
    )


def test_malformed_override_is_one_line(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        compose(project, ["trainer.max_epochs=5=6"])
    message = info.value.one_line()
    assert message.startswith("malformed override 'trainer.max_epochs=5=6'")
    assert "\n" not in message


def test_missing_config_file(project: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        compose(project, config_file=tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n"])
def test_config_file_not_a_mapping(project: Path, tmp_path: Path, text: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match="must hold a YAML mapping"):
        compose(project, config_file=file)


def test_config_file_that_does_not_parse(project: Path, tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("trainer: {max_epochs: 3\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        compose(project, config_file=file)


def test_unknown_key_in_config_file(project: Path, tmp_path: Path) -> None:
    file = write_yaml(tmp_path / "run.yaml", {"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as info:
        compose(project, config_file=file)
    assert "unknown config key 'optim.lrr'" in info.value.one_line()
    assert "(did you mean 'optim.lr'?)" in info.value.one_line()


def test_unknown_option_in_config_file(project: Path, tmp_path: Path) -> None:
    file = write_yaml(tmp_path / "run.yaml", {"model": "mini_unnet"})
    with pytest.raises(ConfigError, match="did you mean 'mini_unet'"):
        compose(project, config_file=file)


def test_composing_twice_leaves_no_state(project: Path, tmp_path: Path) -> None:
    file = write_yaml(tmp_path / "run.yaml", {"optim": {"lr": 0.02}})
    first = compose(project, ["model=mini_unet"], config_file=file)
    assert not GlobalHydra.instance().is_initialized()
    second = compose(project)
    assert not GlobalHydra.instance().is_initialized()
    assert (first.model.name, first.optim.lr) == ("mini_unet", pytest.approx(0.02))
    assert (second.model.name, second.optim.lr) == ("fast_unet", pytest.approx(4e-3))


def test_failure_leaves_hydra_uninitialised(project: Path) -> None:
    with pytest.raises(ConfigError):
        compose(project, ["trainer.max_epoch=5"])
    assert not GlobalHydra.instance().is_initialized()
    assert compose(project).trainer.max_epochs == 30


def test_cwd_unchanged_and_no_outputs(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    before = sorted(os.listdir(project))
    cfg = compose_train_config(["model=custom"])  # project_root defaults to the cwd
    assert cfg.model.name == "custom"
    assert Path.cwd() == project
    assert sorted(os.listdir(project)) == before
    assert not (project / "outputs").exists()


def test_works_with_cwd_elsewhere(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    file = write_yaml(project / "run.yaml", {"seed": 3})
    cfg = compose_train_config(["model=custom"], config_file=file, project_root=project)
    assert (cfg.model.name, cfg.seed) == ("custom", 3)
    assert os.listdir(elsewhere) == []


def test_packaged_tree_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if any(not (PACKAGED / name).is_file() for name in STUBS):
        pytest.skip("packaged data/model options not written yet")
    monkeypatch.chdir(tmp_path)
    cfg = compose_train_config(["debug=tiny"])
    validate_train_config(cfg)
    assert cfg.data.image_size == 32


def test_source_checkout_is_not_layered_twice() -> None:
    repo = PACKAGED.parent
    if not (repo / "cmi_cli").is_dir() or any(not (PACKAGED / n).is_file() for n in STUBS):
        pytest.skip("needs the source checkout with every packaged option")
    # The repo's configs/ is the packaged tree; read as a project train.yaml it would pin
    # the primary values above the experiment's.
    cfg = compose_train_config(["experiment=fast"], project_root=repo)
    assert cfg.optim.lr == pytest.approx(3e-3)


def test_installed_layout_reads_configs_as_a_package(tmp_path: Path) -> None:
    # The wheel ships configs/ as the package cmi_cli.configs; mimic that layout on sys.path.
    site = tmp_path / "site"
    shutil.copytree(Path(__file__).resolve().parents[1] / "cmi_cli", site / "cmi_cli")
    shutil.copytree(PACKAGED, site / "cmi_cli/configs", dirs_exist_ok=True)
    for name, content in STUBS.items():
        if not (site / "cmi_cli/configs" / name).is_file():
            write_yaml(site / "cmi_cli/configs" / name, content)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    script = (
        "import cmi_cli.config as c\n"
        "cfg = c.compose_train_config(['experiment=baseline', 'debug=tiny'])\n"
        "print(c.__file__, cfg.model.name, cfg.data.image_size, cfg.logger.name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    where, model, size, logger = done.stdout.split()
    assert Path(where).is_relative_to(site)
    assert (model, size, logger) == ("mini_unet", "32", "none")
    assert os.listdir(cwd) == []


def test_config_to_yaml_resolves(project: Path, tmp_path: Path) -> None:
    file = write_yaml(tmp_path / "run.yaml", {"run": {"name": "${model.name}-try"}})
    text = config_to_yaml(compose(project, config_file=file))
    assert yaml.safe_load(text)["run"]["name"] == "fast_unet-try"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.lr=-1", "config key 'optim.lr' must be a number > 0, got -1"),
        ("optim.lr=0", "'optim.lr' must be a number > 0"),
        ("trainer.max_epochs=0", "'trainer.max_epochs' must be an integer >= 1"),
        ("trainer.precision=33", "'trainer.precision' must be one of 64-true, 32-true"),
        ("optim.scheduler=step", "'optim.scheduler' must be one of cosine, onecycle, none"),
        ("optim.warmup_epochs=31", "optim.warmup_epochs (31) must not exceed"),
        ("loss.class_weights=[1.0,2.0]", "loss.class_weights has 2 weights"),
        ("compile=maybe", "'compile' must be true or false"),
        ("trainer.limit_train_batches=1.5", "'trainer.limit_train_batches' must be null"),
    ],
)
def test_validate_rejects_bad_values(project: Path, override: str, needle: str) -> None:
    cfg = compose(project, [override])
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg)
    assert needle in info.value.one_line()


@pytest.mark.parametrize(
    "overrides",
    [["trainer=cpu"], ["trainer=ddp_cpu"], ["debug=tiny"], ["debug=profiler"], ["debug=overfit"]],
)
def test_trainer_keys_are_lightning_trainer_arguments(project: Path, overrides: list[str]) -> None:
    lightning = pytest.importorskip("lightning")
    from omegaconf import OmegaConf

    cfg = compose(project, overrides)
    kwargs = OmegaConf.to_container(cfg.trainer)
    trainer = lightning.Trainer(**kwargs, logger=False, enable_progress_bar=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("where", ["config-file", "project-train", "project-group"])
def test_yaml_error_names_file_line_and_column(project: Path, tmp_path: Path, where: str) -> None:
    text = "trainer:\n  max_epochs: 3\n  devices: [1, 2\nseed: 1\n"
    overrides: list[str] = []
    config_file = None
    if where == "config-file":
        path = config_file = tmp_path / "broken.yaml"
    elif where == "project-train":
        path = project / "configs" / "train.yaml"
    else:
        path = project / "configs" / "model" / "broken.yaml"
        overrides = ["model=broken"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        compose(project, overrides, config_file=config_file)
    line = info.value.one_line()
    assert "\n" not in line
    # PyYAML reports the unclosed flow sequence where the next key starts: line 4, column 5.
    assert f"{path}:4:5:" in line, line
