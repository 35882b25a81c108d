"""Pretrained encoder weights: a local file loads exactly and is checked, a wrong file is a named
error, and without network ``imagenet`` fails at once with a one-line way out."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cmi_cli.errors import ArtifactError, ConfigError
from cmi_cli.models import build_model
from cmi_cli.models.weights import (
    check_weights_available,
    load_pretrained,
    read_state_dict,
    save_encoder_weights,
)

ENCODER = "tu-mobilenetv3_small_050"


def tiny(encoder: str = ENCODER, weights: str = "none", arch: str = "FPN") -> torch.nn.Module:
    return build_model("smp", 4, arch=arch, encoder=encoder, encoder_weights=weights)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No hub and an empty cache, whatever the machine has."""
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_weights_file_from_one_model_loads_exactly_into_another(
    tmp_path: Path, suffix: str
) -> None:
    torch.manual_seed(1)
    source = tiny()
    path = save_encoder_weights(source, tmp_path / f"enc{suffix}")
    # Another architecture on the same encoder: the file holds the encoder only.
    torch.manual_seed(2)
    target = tiny(weights=str(path), arch="Unet")
    before = {k: v.clone() for k, v in target.encoder.state_dict().items()}
    record = load_pretrained(target)
    loaded, expected = target.encoder.state_dict(), source.encoder.state_dict()
    assert loaded.keys() == expected.keys()
    for key in expected:
        assert torch.equal(loaded[key], expected[key]), key
    assert any(not torch.equal(before[k], expected[k]) for k in expected)  # it did change
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert record == {"source": "file", "path": str(path), "sha256": digest, "keys": len(expected)}


def test_a_whole_model_state_dict_is_accepted_by_its_encoder_prefix(tmp_path: Path) -> None:
    source = tiny()
    path = tmp_path / "whole.pth"
    torch.save({"state_dict": source.model.state_dict()}, path)
    target = tiny(weights=str(path))
    load_pretrained(target)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(target.encoder.state_dict()[key], value)


def test_a_file_for_another_encoder_is_a_named_error(tmp_path: Path) -> None:
    path = save_encoder_weights(tiny("resnet18"), tmp_path / "r18.safetensors")
    target = tiny("resnet34", weights=str(path))
    with pytest.raises(ArtifactError) as info:
        load_pretrained(target)
    line = info.value.one_line()
    assert "\n" not in line
    assert "encoder 'resnet34'" in line
    assert "missing (layer1.2." in line
    # Same key names, other shapes: also refused, never a silent partial load.
    path = save_encoder_weights(tiny("resnet18"), tmp_path / "r18b.pth")
    with pytest.raises(ArtifactError, match=r"unexpected|missing|shape"):
        load_pretrained(tiny(ENCODER, weights=str(path)))


def test_an_unreadable_or_unsafe_file_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="not a readable weights file"):
        read_state_dict(junk)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(ArtifactError, match="not a readable weights file"):
        read_state_dict(evil)
    listy = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(ArtifactError, match="holds no state dict"):
        read_state_dict(listy)
    with pytest.raises(ConfigError, match="weights file not found"):
        check_weights_available(
            "smp", {"encoder": "resnet18", "encoder_weights": str(tmp_path / "nope.pth")}
        )


def test_imagenet_offline_fails_at_once_naming_the_encoder(offline: Path) -> None:
    params = {"arch": "FPN", "encoder": "resnet18", "encoder_weights": "imagenet"}
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        check_weights_available("smp", params)
    line = info.value.one_line()
    assert "'resnet18'" in line
    assert "HF_HUB_OFFLINE" in line
    assert "model.encoder_weights=/path/to/encoder.safetensors" in line
    with pytest.raises(ConfigError, match="'tu-mobilenetv3_small_050'"):
        load_pretrained(tiny(weights="imagenet"))
    assert time.monotonic() - start < 10


def test_an_unreachable_hub_is_noticed_within_seconds(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1 cannot be reached"):
        load_pretrained(tiny("resnet18", weights="imagenet"))
    assert time.monotonic() - start < 10


def test_cmi_train_with_imagenet_offline_exits_with_one_line(tiny_project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMI_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tiny_project / "hf"), WANDB_MODE="disabled")
    cmd = [sys.executable, "-m", "cmi_cli", "train", "model=mobile", "debug=tiny"]
    done = subprocess.run(
        cmd, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert "tu-mobilenetv3_large_100" in errors[0]
    assert "model.encoder_weights=" in errors[0]
    assert "Traceback" not in done.stderr
    assert not (tiny_project / "runs").exists() or not list(tiny_project.glob("runs/*/checkpoints"))


def test_checkpoint_records_the_weights_file_and_rebuilds_without_it(
    tiny_project: Path, tmp_path: Path
) -> None:
    from cmi_cli.config import compose_train_config
    from cmi_cli.info import describe
    from cmi_cli.training.checkpoint import load_model
    from cmi_cli.training.train import train

    path = save_encoder_weights(tiny(), tmp_path / "enc.safetensors")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    overrides = [
        "debug=tiny",
        "model=mobile",
        f"model.encoder={ENCODER}",
        f"model.encoder_weights={path}",
        "trainer.limit_train_batches=1",
        "run.name=w",
    ]
    cfg = compose_train_config(overrides, project_root=tiny_project)
    run = train(cfg, project_root=tiny_project, show_progress=False)
    assert run.best_ckpt is not None
    path.unlink()  # the trained weights are in the checkpoint; the file is not needed again
    _, lineage = load_model(run.best_ckpt)
    weights = lineage["model"]["weights"]
    assert weights["source"] == "file"
    assert weights["sha256"] == digest
    assert lineage["model"]["architecture"] == "FPN"
    assert lineage["model"]["encoder"] == ENCODER
    shown = describe(run.best_ckpt)["model"]
    assert shown["architecture"] == "FPN"
    assert digest in shown["weights"]
