import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from cmi_cli.errors import ArtifactError, ConfigError
from cmi_cli.models import (
    available_models,
    build_from_spec,
    build_model,
    default_params,
    model_spec,
)
from cmi_cli.models.complexity import count_flops, count_parameters, describe_model

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"
# The hand-written U-Nets, which take any input size; the smp zoo is tested in test_zoo_models.py.
OWN_MODELS = ["fast_unet", "mini_unet"]
SIZES = [(1, 33, 47), (2, 65, 65), (1, 127, 255), (2, 1, 1), (1, 64, 64)]


def conv_params(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def test_registry_lists_both_architectures():
    assert {"fast_unet", "mini_unet", "smp"} <= set(available_models())


@pytest.mark.parametrize("name", OWN_MODELS)
@pytest.mark.parametrize(("batch", "height", "width"), SIZES)
def test_logits_have_input_size(name, batch, height, width):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5).eval()
    with torch.no_grad():
        logits = model(torch.randn(batch, 3, height, width))
    assert logits.shape == (batch, 5, height, width)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_mini_unet_channel_plan_and_exact_parameter_count():
    model = build_model("mini_unet", num_classes=104)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    outs = [c.out_channels for c in convs]
    # encoder 64, 128, 256 (two convs each), bottleneck 512, decoder 256, 128, 64, head 104
    assert outs == [64, 64, 128, 128, 256, 256, 512, 512, 256, 256, 128, 128, 64, 64, 104]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels, u.stride) for u in ups] == [
        (512, 256, (2, 2)),
        (256, 128, (2, 2)),
        (128, 64, (2, 2)),
    ]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    expected = (
        conv_params(3, 64, 3) + conv_params(64, 64, 3)
        + conv_params(64, 128, 3) + conv_params(128, 128, 3)
        + conv_params(128, 256, 3) + conv_params(256, 256, 3)
        + conv_params(256, 512, 3) + conv_params(512, 512, 3)
        + conv_params(512, 256, 2) + conv_params(512, 256, 3) + conv_params(256, 256, 3)
        + conv_params(256, 128, 2) + conv_params(256, 128, 3) + conv_params(128, 128, 3)
        + conv_params(128, 64, 2) + conv_params(128, 64, 3) + conv_params(64, 64, 3)
        + conv_params(64, 104, 1)
    )  # fmt: skip
    assert count_parameters(model) == expected == 7_704_040


def test_fast_unet_channels_follow_width_and_depth():
    model = build_model("fast_unet", num_classes=7, width=8, depth=2)
    outs = {m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert outs == {8, 16, 32, 7}
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    default = build_model("fast_unet", num_classes=104)
    outs = {m.out_channels for m in default.modules() if isinstance(m, nn.Conv2d)}
    assert outs == {16, 32, 64, 128, 104}
    assert count_parameters(default) < count_parameters(build_model("mini_unet", 104)) / 10


@pytest.mark.parametrize("name", OWN_MODELS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4, **({"width": 4} if name == "fast_unet" else {}))
    logits = model(torch.randn(2, 3, 24, 20))
    loss = nn.functional.cross_entropy(logits, torch.randint(0, 4, (2, 24, 20)))
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
    assert model.head.weight.grad.abs().sum() > 0


def test_unknown_model_suggests_close_name():
    with pytest.raises(ConfigError) as info:
        build_model("fast_unt", num_classes=3)
    text = info.value.one_line()
    assert "'fast_unt'" in text
    assert "Did you mean 'fast_unet'" in text
    assert "mini_unet" in text


def test_unknown_parameter_is_named_with_suggestion():
    with pytest.raises(ConfigError) as info:
        build_model("fast_unet", num_classes=3, widht=8)
    assert "'widht'" in info.value.message
    assert "Did you mean 'width'" in info.value.one_line()
    with pytest.raises(ConfigError, match="'width'"):
        build_model("mini_unet", num_classes=3, width=8)


@pytest.mark.parametrize(
    ("params", "word"),
    [({"width": 0}, "width"), ({"depth": 9}, "depth"), ({"upsample": "cubic"}, "upsample")],
)
def test_invalid_parameter_value_is_a_config_error(params, word):
    with pytest.raises(ConfigError, match=word):
        build_model("fast_unet", num_classes=3, **params)


def test_invalid_num_classes():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("fast_unet", num_classes=0)


@pytest.mark.parametrize("name", OWN_MODELS)
def test_spec_round_trip_rebuilds_same_architecture(name):
    params = {"width": 8, "depth": 2} if name == "fast_unet" else {}
    model = build_model(name, num_classes=6, **params).eval()
    spec = json.loads(json.dumps(model_spec(model)))  # survives a JSON checkpoint record
    assert spec["name"] == name
    assert spec["num_classes"] == 6
    assert spec["params"] == {**default_params(name), **params}
    rebuilt = build_from_spec(spec).eval()
    before = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == before
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 17, 23)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_spec_errors():
    with pytest.raises(ArtifactError, match="num_classes"):
        build_from_spec({"name": "fast_unet", "params": {}})
    with pytest.raises(ValueError, match="build_model"):
        model_spec(nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize(
    "path", [CONFIG_DIR / f"{name}.yaml" for name in OWN_MODELS], ids=lambda p: p.stem
)
def test_model_configs_build_and_list_every_parameter(path):
    cfg = yaml.safe_load(path.read_text())
    assert cfg["name"] == path.stem
    assert "num_classes" not in cfg["params"]
    model = build_model(cfg["name"], num_classes=3, **cfg["params"])
    assert model_spec(model)["params"] == {**default_params(cfg["name"]), **cfg["params"]}
    if cfg["params"]:
        assert set(cfg["params"]) == set(default_params(cfg["name"]))


def test_count_flops_matches_hand_computation():
    conv = nn.Conv2d(3, 16, 3, padding=1)
    # 16 outputs x 3 inputs x 3 x 3 taps per pixel, 32 x 32 pixels, 2 FLOPs per MAC
    assert count_flops(conv, (1, 3, 32, 32)) == 2 * 16 * 3 * 9 * 32 * 32
    up = nn.ConvTranspose2d(8, 4, 2, stride=2)
    # each of the 16 x 16 input pixels feeds 4 outputs x 2 x 2 taps from 8 channels
    assert count_flops(up, (2, 8, 16, 16)) == 2 * 2 * 8 * 4 * 4 * 16 * 16
    assert count_parameters(conv) == 16 * 3 * 9 + 16
    conv.bias.requires_grad_(False)
    assert count_parameters(conv, trainable_only=True) == 16 * 3 * 9


def test_count_flops_restores_training_mode():
    model = build_model("fast_unet", num_classes=3, width=4)
    model.train()
    assert count_flops(model, (1, 3, 16, 16)) > 0
    assert model.training


def test_describe_model_reports_size_and_cost():
    fast = describe_model("fast_unet", 104, {}, (1, 3, 256, 256))
    mini = describe_model("mini_unet", 104, None, (1, 3, 256, 256))
    json.dumps(fast)
    assert fast["params"] == default_params("fast_unet")
    assert fast["num_parameters"] == count_parameters(build_model("fast_unet", 104))
    assert fast["input_size"] == [1, 3, 256, 256]
    assert 1 < fast["gflops"] < mini["gflops"] / 5
    assert mini["num_parameters"] == 7_704_040


def test_fast_unet_channels_last_gives_same_logits():
    torch.manual_seed(0)
    model = build_model("fast_unet", num_classes=5, width=8).eval()
    x = torch.randn(1, 3, 37, 29)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", OWN_MODELS)
def test_onnx_export_with_dynamic_height_and_width(name):
    ort = pytest.importorskip("onnxruntime")
    params = {"width": 8} if name == "fast_unet" else {}
    model = build_model(name, num_classes=4, **params).eval()
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 32, 32),),
        buffer,
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": axes, "logits": axes},
        opset_version=17,
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 33, 47), (2, 3, 64, 80)]:
        x = torch.randn(*shape)
        (out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert out.shape == (shape[0], 4, shape[2], shape[3])
        assert abs(out - expected).max() < 1e-4


@pytest.mark.parametrize("name", OWN_MODELS)
def test_torch_pruning_halves_channels_and_keeps_output_shape(name):
    tp = pytest.importorskip("torch_pruning")
    params = {"width": 8} if name == "fast_unet" else {}
    model = build_model(name, num_classes=4, **params).eval()
    before = count_parameters(model)
    pruner = tp.pruner.MagnitudePruner(
        model,
        torch.randn(1, 3, 32, 32),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[model.head],
    )
    pruner.step()
    assert count_parameters(model) < before * 0.35
    assert model.head.out_channels == 4
    with torch.no_grad():
        assert model(torch.randn(2, 3, 33, 47)).shape == (2, 4, 33, 47)
