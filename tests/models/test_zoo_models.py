"""The smp model zoo in the registry: one config entry for every architecture, presets by name,
rebuilding from a spec, and one-line errors for unknown names and unsuitable image sizes."""

from __future__ import annotations

import pytest
import torch

from cmi_cli.config import compose_train_config
from cmi_cli.errors import ConfigError
from cmi_cli.models import build_from_spec, build_model, model_spec
from cmi_cli.models.registry import check_image_size, params_from_config, zoo_record

ARCHS = ["Unet", "FPN", "DeepLabV3Plus", "Segformer", "UPerNet"]
PRESETS = {
    "mobile": ("FPN", "tu-mobilenetv3_large_100"),
    "cnn": ("UPerNet", "tu-convnext_tiny"),
    "transformer": ("Segformer", "mit_b2"),
}


def zoo_params(*overrides: str) -> tuple[str, dict]:
    from omegaconf import OmegaConf

    cfg = compose_train_config(list(overrides))
    return params_from_config(OmegaConf.to_container(cfg.model, resolve=True))


@pytest.mark.parametrize("arch", ARCHS)
def test_one_config_entry_drives_every_architecture(arch: str) -> None:
    name, params = zoo_params(
        "model=smp", f"model.arch={arch}", "model.encoder=resnet18", "model.encoder_weights=none"
    )
    assert (name, params["arch"], params["encoder"]) == ("smp", arch, "resnet18")
    torch.manual_seed(0)
    model = build_model(name, 7, **params).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 96))
    assert logits.shape == (2, 7, 64, 96)
    assert zoo_record(model) == {"architecture": arch, "encoder": "resnet18", "input_divisor": 32}
    # A checkpoint's spec rebuilds the same network, weights and all.
    spec = model_spec(model)
    rebuilt = build_from_spec(spec).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(torch.ones(1, 3, 64, 64)), model(torch.ones(1, 3, 64, 64)))


def test_timm_encoder_and_architecture_arguments_pass_through() -> None:
    name, params = zoo_params(
        "model=smp",
        "model.arch=fpn",
        "model.encoder=tu-mobilenetv3_small_050",
        "model.encoder_weights=none",
        "+model.params.decoder_dropout=0.0",
    )
    model = build_model(name, 3, **params)
    assert zoo_record(model)["architecture"] == "FPN"
    assert model.model.decoder.dropout.p == 0.0
    assert model_spec(model)["params"]["decoder_dropout"] == 0.0


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_compose_by_name_with_imagenet_weights(preset: str) -> None:
    name, params = zoo_params(f"model={preset}")
    assert name == "smp"
    assert (params["arch"], params["encoder"]) == PRESETS[preset]
    assert params["encoder_weights"] == "imagenet"
    # Any part of a preset can be changed on the command line.
    _, changed = zoo_params(f"model={preset}", "model.encoder=resnet18")
    assert changed["encoder"] == "resnet18"
    assert changed["arch"] == PRESETS[preset][0]


def test_default_model_stays_fast_unet() -> None:
    name, params = zoo_params()
    assert name == "fast_unet"
    assert params == {"width": 16, "depth": 3, "in_channels": 3, "upsample": "bilinear"}


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"arch": "Unett"}, ["model.arch 'Unett'", "did you mean 'Unet'"]),
        ({"arch": "deeplab_v3_plus"}, None),
        ({"encoder": "resnet19"}, ["model.encoder 'resnet19'", "'resnet18'"]),
        ({"encoder": "mobilenetv3_large_100"}, ["'tu-mobilenetv3_large_100'"]),
        ({"encoder": "tu-convnext_tinyy"}, ["'tu-convnext_tiny'"]),
    ],
)
def test_unknown_arch_or_encoder_is_one_line_with_suggestions(
    params: dict, words: list[str] | None
) -> None:
    if words is None:  # spelling variants of a real architecture are accepted
        assert zoo_record(build_model("smp", 3, **params))["architecture"] == "DeepLabV3Plus"
        return
    with pytest.raises(ConfigError) as info:
        build_model("smp", 3, **params)
    line = info.value.one_line()
    assert "\n" not in line
    for word in words:
        assert word in line


def test_image_size_must_suit_the_output_stride() -> None:
    model = build_model("smp", 3, encoder="resnet18")
    check_image_size(model, 256)
    with pytest.raises(ConfigError) as info:
        check_image_size(model, 250)
    line = info.value.one_line()
    assert "data.image_size=250" in line
    assert "multiple of 32" in line
    assert "resnet18" in line
    assert "256" in line
    # The hand-written U-Nets take any size.
    check_image_size(build_model("fast_unet", 3), 250)


def test_training_refuses_an_unsuitable_size_before_it_starts(tiny_project) -> None:
    from cmi_cli.training.train import train

    cfg = compose_train_config(
        ["debug=tiny", "model=mobile", "model.encoder_weights=none", "data.image_size=48"],
        project_root=tiny_project,
    )
    with pytest.raises(ConfigError, match=r"data\.image_size=48 is not a multiple of 32"):
        train(cfg, project_root=tiny_project, show_progress=False)
    assert not list(tiny_project.glob("runs/*/checkpoints/*.ckpt"))


def test_resolution_presets_set_the_image_size() -> None:
    assert compose_train_config(["resolution=256px"]).data.image_size == 256
    assert compose_train_config(["resolution=512px", "model=cnn"]).data.image_size == 512
    with pytest.raises(ConfigError, match="did you mean '256px'"):
        compose_train_config(["resolution=256"])


@pytest.mark.parametrize("output", [2, 3, 6, (2, 5)])
def test_exportable_pyramid_pooling_equals_adaptive_pooling(output) -> None:
    from torch import nn

    from cmi_cli.models.smp_models import ExportableAdaptiveAvgPool2d

    for height, width in [(8, 8), (7, 5), (13, 17), (2, 3)]:
        x = torch.randn(2, 4, height, width)
        expected = nn.AdaptiveAvgPool2d(output)(x)
        got = ExportableAdaptiveAvgPool2d(output)(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_upernet_exports_with_dynamic_height_and_width(tmp_path) -> None:
    import numpy as np
    import onnxruntime as ort

    from cmi_cli.export.onnx_export import _trace_to_onnx

    model = build_model("smp", 5, arch="UPerNet", encoder="resnet18", decoder_channels=16).eval()
    path = tmp_path / "upernet.onnx"
    _trace_to_onnx(model, path, opset=17, dynamic=True, height=64, width=64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height, width in [(64, 64), (96, 160)]:
        x = torch.randn(1, 3, height, width)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape
        assert float(np.abs(got - expected).max()) < 1e-4
