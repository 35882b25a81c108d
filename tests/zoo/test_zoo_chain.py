"""Every zoo preset through the whole chain on the tiny sample: train, evaluate, export ONNX
(validation checklist passing), quantize (with its accuracy delta), serve /v1/segment, and
drift-check the served predictions against the export's reference.

Tiny on purpose: 64 px images, one epoch of two batches, no pretrained weights, and for the
heavier presets a smaller encoder of the same family (ConvNeXt-Atto for ConvNeXt-Tiny, MiT-B0 for
MiT-B2): the decoder, the graph ops and the export path are the preset's own.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import httpx
import pytest
from _serve_helpers import make_photo, start_server

# Overrides that keep each preset's architecture but shrink it to seconds.
PRESETS = {
    "mobile": [],
    "cnn": ["model.encoder=tu-convnext_atto", "+model.params.decoder_channels=32"],
    "transformer": ["model.encoder=mit_b0"],
}
TINY = [
    "debug=tiny",
    "data.image_size=64",
    "model.encoder_weights=none",
    "optim.warmup_epochs=0",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
]
PHOTOS = 6


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_goes_through_the_whole_chain(
    preset: str,
    tmp_path: Path,
    tiny_sample_master: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cmi_cli.config import compose_train_config
    from cmi_cli.export.onnx_export import export_onnx
    from cmi_cli.export.quantize import QuantizeSettings, quantize_onnx
    from cmi_cli.info import describe
    from cmi_cli.monitoring.sources import drift_check
    from cmi_cli.training.evaluate import evaluate_checkpoint
    from cmi_cli.training.train import train

    data = tmp_path / "data" / "foodseg103"
    shutil.copytree(tiny_sample_master, data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("CMI_RUN_NAME", raising=False)

    overrides = [f"model={preset}", *TINY, *PRESETS[preset], f"run.name={preset}"]
    cfg = compose_train_config(overrides, project_root=tmp_path)
    run = train(cfg, project_root=tmp_path, show_progress=False)
    assert run.best_ckpt is not None

    ev = evaluate_checkpoint(run.best_ckpt, data_root=data, split="test")
    assert 0.0 <= ev.scores.miou <= 1.0
    assert ev.num_images > 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exported = export_onnx(run.best_ckpt, num_images=2)
    assert exported.report.ok
    # The exporter's notes on graphs it handles anyway are not for the user.
    assert not [str(w.message) for w in caught if "Constant folding" in str(w.message)]
    checks = {c.name: c.status for c in exported.report.checks}
    assert checks["dynamic batch 2"] == "pass"
    assert any(name.startswith("dynamic size") and s == "pass" for name, s in checks.items())

    record = describe(exported.path)
    arch = {"mobile": "FPN", "cnn": "UPerNet", "transformer": "Segformer"}[preset]
    assert record["model"]["architecture"] == arch
    assert record["model"]["encoder"] == cfg.model.encoder
    assert record["model"]["weights"] == "none"

    cwd_before = sorted(p.name for p in tmp_path.iterdir())
    run_before = sorted(p.name for p in exported.path.parent.iterdir())
    caplog.clear()
    quant = quantize_onnx(
        exported.path, settings=QuantizeSettings(calib_size=4), calib_data=data, data_root=data
    )
    assert quant.path.is_file()
    # One summary, not a warning per norm-layer weight that cannot be quantized per channel.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # Nothing left behind: ORT's shape inference saves a model into the working directory
    # when it gives up on a graph.
    assert sorted(p.name for p in tmp_path.iterdir()) == cwd_before
    made = {p.name for p in exported.path.parent.iterdir()} - set(run_before)
    assert all(not name.startswith(".") for name in made), made
    assert quant.int8.size_mb < quant.fp32.size_mb
    assert "miou" in str(quant.delta()).lower()
    assert 0.0 <= quant.pixel_agreement <= 1.0

    (tmp_path / "serve").mkdir()
    server = start_server(exported.path, tmp_path / "serve", ["--threads", "1"])
    try:
        for seed in range(PHOTOS):
            r = httpx.post(
                f"{server.url}/v1/segment",
                files={"file": ("p.jpg", make_photo(90, 70, seed=seed), "image/jpeg")},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["classes"], body
            assert abs(sum(c["share"] for c in body["classes"]) - 1.0) < 1e-3
    finally:
        server.stop()

    result, paths = drift_check(
        run.run_dir, str(server.log_dir), min_samples=4, out_dir=tmp_path / "drift"
    )
    assert len(result.features) > 0
    assert 0.0 <= result.share <= 1.0
    assert paths["report.json"].is_file()
