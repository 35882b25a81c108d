"""``cmi benchmark``: every format side by side, written as CSV, JSON and Markdown."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from _onnx_project import TrainedProject
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.export.bench_formats import Candidate
from cmi_cli.export.benchmark import BenchmarkRow, default_benchmark_dir, make_rows

runner = CliRunner()
FAST = ["--size", "32", "--batch", "1,2", "--repeats", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def bench(trained_project: TrainedProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A benchmark of five formats of the tiny checkpoint at 32 px (read-only); its out dir."""
    out = tmp_path_factory.mktemp("bench") / "b"
    formats = "torch,onnx,onnx-int8,pruned,baseline"
    args = ["benchmark", str(trained_project.ckpt), "--formats", formats, "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained_project.root)
        mp.setenv("WANDB_MODE", "disabled")
        result = runner.invoke(app, [*args, *FAST, "--prune-finetune-epochs", "0"])
    assert result.exit_code == 0, result.output
    (out / "stdout.txt").write_text(result.output)
    return out


def test_reports_hold_every_format_and_batch(bench: Path) -> None:
    rows = list(csv.DictReader((bench / "benchmark.csv").open()))
    assert [(r["format"], r["batch"]) for r in rows] == [
        (f, b) for b in ("1", "2") for f in ("torch", "onnx", "onnx-int8", "pruned", "baseline")
    ]
    by = {(r["format"], r["batch"]): r for r in rows}
    assert by["torch", "1"]["speedup"] == "1.0"
    # The eager layout is whichever a short probe timed faster (timing: either can win).
    assert by["torch", "1"]["layout"] in ("channels_last", "NCHW")
    assert by["torch", "1"]["allocator"]
    assert by["onnx", "1"]["status"] == "validated"
    assert by["onnx-int8", "1"]["status"] == "validated"
    assert float(by["onnx-int8", "1"]["size_mb"]) < float(by["onnx", "1"]["size_mb"]) / 3
    assert float(by["pruned", "1"]["gflops_per_image"]) < float(
        by["torch", "1"]["gflops_per_image"]
    )
    # The untrained baseline is timed but not scored.
    assert by["baseline", "1"]["status"] == "exported"
    assert by["baseline", "1"]["miou"] == ""
    for r in rows:
        assert float(r["p90_ms"]) >= float(r["p50_ms"]) > 0
        assert float(r["throughput"]) > 0
        assert float(r["gflops_per_s"]) > 0
        assert 0 <= float(r["peak_pct"]) <= 100
        assert r["peak_of"] == ("int8" if r["format"] == "onnx-int8" else "fp32")
    record = json.loads((bench / "benchmark.json").read_text())
    assert record["machine"]["matmul_peak_gflops"] > 0
    assert record["machine"]["torch_runtime"]["allocator"]
    assert len(record["rows"]) == 10
    md = (bench / "benchmark.md").read_text()
    assert "| format | batch | status |" in md
    assert md.count("| onnx-int8 |") == 2
    for name in ("model.onnx", "model.int8.onnx", "pruned-r0.5.ckpt"):
        assert (bench / name).is_file()
    assert "speed-up" in (bench / "stdout.txt").read_text()


def test_each_format_is_measured_against_its_own_peak_and_none_exceeds_it(bench: Path) -> None:
    record = json.loads((bench / "benchmark.json").read_text())
    peaks = record["machine"]["peaks"]
    assert set(peaks) == {"fp32", "int8"}
    assert "MatMulInteger u8s8" in peaks["int8"]["kernel"]
    for peak in peaks.values():
        # Timed in the formats' own rounds: 2 batches x 2 repeats, median and spread printed.
        assert peak["rounds"] == 4
        assert peak["low"] <= peak["gops"] <= peak["high"]
    rows = record["rows"]
    int8 = next(r for r in rows if r["format"] == "onnx-int8" and r["batch"] == 1)
    assert int8["peak_pct"] == pytest.approx(
        100 * int8["gflops_per_s"] / peaks["int8"]["gops"], rel=0.02, abs=0.1
    )
    printed = (bench / "stdout.txt").read_text() + (bench / "benchmark.md").read_text()
    assert "int8 GEMM peak" in printed
    assert "spread" in printed
    # Every share of peak printed in the table and the reports is a real share.
    for r in rows:
        assert 0 < r["peak_pct"] <= 100, r
    table = [line.split("|")[1:-1] for line in printed.splitlines() if line.startswith("| ")]
    column = [c.strip() for c in table[0]].index("% peak")
    shares = [float(cells[column]) for cells in table[1:] if cells[column].strip() != "-"]
    assert len(shares) == len(rows)
    assert max(shares) <= 100


def test_the_served_default_is_compared_with_the_original_miniunet(bench: Path) -> None:
    record = json.loads((bench / "benchmark.json").read_text())
    head = record["headline"]
    by = {(r["format"], r["batch"]): r for r in record["rows"]}
    assert head["served"] == "onnx-int8"
    assert head["batch"] == 1
    assert head["size"] == 32
    assert head["ratio"] == pytest.approx(
        by["baseline", 1]["p50_ms"] / by["onnx-int8", 1]["p50_ms"], rel=0.01
    )
    out = (bench / "stdout.txt").read_text()
    assert f"= {head['ratio']:.2f}x" in out
    assert "MiniUNet" in out


def test_min_miou_fails_naming_the_formats_below(
    trained_project: TrainedProject, in_project: Path, tmp_path: Path
) -> None:
    args = ["benchmark", str(trained_project.ckpt), "--formats", "torch,baseline"]
    result = runner.invoke(app, [*args, *FAST, "--out", str(tmp_path), "--min-miou", "1.1"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert "--min-miou 1.1" in last
    assert "torch" in last
    assert "baseline" not in last  # no mIoU to judge: latency only
    assert (tmp_path / "benchmark.csv").is_file()


def test_a_failing_format_is_a_row_not_a_crash() -> None:
    good = Candidate("torch", "validated", predict=lambda x: x, flops_per_image=2e9)
    broken = Candidate("onnx", "failed", detail="export failed")
    rows = make_rows([good, broken], 1, {"torch": [0.01, 0.02, 0.03]}, peak=1000.0)
    assert rows[0] == BenchmarkRow(
        format="torch",
        batch=1,
        status="validated",
        p50_ms=20.0,
        p90_ms=28.0,
        throughput=50.0,
        speedup=1.0,
        gflops_per_s=100.0,
        peak_pct=10.0,
        peak_of="fp32",
        gflops_per_image=2.0,
    )
    assert (rows[1].status, rows[1].p50_ms, rows[1].detail) == ("failed", None, "export failed")


def test_default_out_dir() -> None:
    assert default_benchmark_dir(Path("runs/r/checkpoints/best.ckpt")) == Path("runs/r/benchmark")


def test_bad_inputs_fail_in_one_line_and_leave_nothing(
    trained_project: TrainedProject, in_project: Path, tmp_path: Path
) -> None:
    good = trained_project.ckpt.read_bytes()
    (tmp_path / "text.ckpt").write_text("hello\n")
    (tmp_path / "truncated.ckpt").write_bytes(good[:4096])
    import torch

    ckpt = torch.load(trained_project.ckpt, weights_only=True)
    ckpt["cmi_lineage"]["model"]["name"] = "resnet_9000"
    torch.save(ckpt, tmp_path / "other.ckpt")
    cases = {
        "missing.ckpt": "not found",
        "text.ckpt": "not a",
        "truncated.ckpt": "truncated",
        "other.ckpt": "resnet_9000",
    }
    for name, words in cases.items():
        out = tmp_path / f"out-{name}"
        result = runner.invoke(app, ["benchmark", str(tmp_path / name), "--out", str(out), *FAST])
        assert result.exit_code == 1, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, (name, result.output)
        assert words in lines[0], (name, lines[0])
        assert not out.exists()
    wrong = runner.invoke(app, ["benchmark", str(trained_project.ckpt), "--formats", "tflite"])
    assert wrong.exit_code == 2
    assert "tflite" in wrong.output


@pytest.mark.slow
def test_torch_compile_row_reports_compile_time(
    trained_project: TrainedProject, in_project: Path, tmp_path: Path
) -> None:
    ckpt = Path(shutil.copy(trained_project.ckpt, tmp_path / "m.ckpt"))
    args = ["benchmark", str(ckpt), "--formats", "torch,torch-compile", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, *FAST])
    assert result.exit_code == 0, result.output
    rows = {r["format"]: r for r in csv.DictReader((tmp_path / "benchmark.csv").open())}
    assert rows["torch-compile"]["status"] in ("validated", "failed")
    if rows["torch-compile"]["status"] == "validated":
        assert float(rows["torch-compile"]["prepare_s"]) > 0
    else:
        assert rows["torch-compile"]["detail"]
