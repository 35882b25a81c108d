"""`cmi profile --target data`: loader throughput, cProfile hot spots and recommendations."""

from __future__ import annotations

import json
import pstats
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cmi_cli.cli.app import app
from cmi_cli.data.cache import prepare_cache
from cmi_cli.data.config import DataConfig
from cmi_cli.profiling.data_profile import DataProfile, LoaderRate, _recommend, profile_data

CFG = DataConfig(image_size=32, batch_size=4)


def test_profile_of_the_decoding_loader(tiny_project: Path) -> None:
    out = tiny_project / "prof"
    profile = profile_data(CFG, tiny_project, workers=(0,), batches=2, repeats=2, out_dir=out)
    assert profile.cache is None
    assert profile.profiled_source == "decode"
    (rate,) = profile.rates
    assert (rate.source, rate.workers, len(rate.runs)) == ("decode", 0, 2)
    assert rate.images_per_s > 0
    functions = [h.function for h in profile.hotspots]
    assert any("cmi_cli/data/source.py" in f and "(read)" in f for f in functions), functions
    assert any("cmi_cli/data/dataset.py" in f for f in functions)
    assert not any("(_endless)" in f for f in functions)  # the timing loop is left out
    cumulative = [h.cumulative_s for h in profile.hotspots]
    assert cumulative == sorted(cumulative, reverse=True)
    assert 0 < profile.read_share <= 1
    assert profile.augment_per_s["cpu"] > 0
    assert ("cuda" in profile.augment_per_s) == torch.cuda.is_available()
    assert profile.recommended == {
        "num_workers": 0,
        "persistent_workers": False,
        "pin_memory": False,
        "prefetch_factor": None,
    }
    saved = json.loads((out / "data_profile.json").read_text())
    assert saved["rates"][0]["images_per_s"] == pytest.approx(rate.images_per_s)
    assert pstats.Stats(str(out / "loader.pstats")).total_calls > 0  # type: ignore[attr-defined]
    assert "cumulative" in (out / "hotspots.txt").read_text()


def test_profile_times_the_cache_beside_decoding(tiny_project: Path) -> None:
    prepare_cache(tiny_project / "data" / "foodseg103", 32, show_progress=False)
    profile = profile_data(CFG, tiny_project, workers=(0,), batches=2, repeats=1)
    assert profile.cache is not None
    assert profile.profiled_source == "cache"
    assert {(r.source, r.workers) for r in profile.rates} == {("decode", 0), ("cache", 0)}
    assert any("cmi_cli/data/dataset.py" in h.function for h in profile.hotspots)
    assert 0 < profile.read_share < 0.5  # copying out of the memory map is cheap
    assert not any("cmi_cli/data/layout.py" in h.function for h in profile.hotspots)
    assert any("packed cache is" in r for r in profile.reasons)


def test_recommendation_takes_the_fewest_workers_near_the_fastest() -> None:
    profile = DataProfile("data/x", 256, 8, 10, cache=None, profiled_source="decode")
    profile.rates = [
        LoaderRate("decode", 0, 100.0, [100.0]),
        LoaderRate("decode", 1, 190.0, [190.0]),
        LoaderRate("decode", 2, 200.0, [200.0]),
    ]
    profile.read_share = 0.8
    _recommend(profile, cuda=True)
    assert profile.recommended == {
        "num_workers": 1,
        "persistent_workers": True,
        "pin_memory": True,
        "prefetch_factor": 4,
    }
    assert any("cmi data prepare data/x --size 256" in r for r in profile.reasons)
    assert profile.overrides().startswith("data.num_workers=1 data.persistent_workers=true")


def test_cli_profiles_the_data_pipeline(tiny_project: Path) -> None:
    out = tiny_project / "dp"
    args = ["profile", "--target", "data", "debug=tiny", "--steps", "2", "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "decode images/s" in result.output
    assert "per-batch augmentation and normalisation on cpu" in result.output
    assert "recommended" in result.output
    assert "data.num_workers=0" in result.output
    assert (out / "data_profile.json").is_file()
    bad = CliRunner().invoke(app, ["profile", "--target", "data", "--workers", "one"])
    assert bad.exit_code == 2
    assert "--workers must list worker counts" in bad.output


@pytest.mark.slow
def test_worker_processes_are_timed_for_both_sources(tiny_project: Path) -> None:
    prepare_cache(tiny_project / "data" / "foodseg103", 32, show_progress=False)
    profile = profile_data(CFG, tiny_project, workers=(0, 1), batches=3, repeats=1)
    assert {(r.source, r.workers) for r in profile.rates} == {
        (s, w) for s in ("decode", "cache") for w in (0, 1)
    }
    assert all(r.images_per_s > 0 for r in profile.rates)
