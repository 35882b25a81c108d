"""Evidently's verdicts on real image features: quiet on the same distribution, loud on shifts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _drift_fixtures import DriftData

from cmi_cli.errors import DataError
from cmi_cli.monitoring.drift import DriftResult, run_drift, save_report
from cmi_cli.monitoring.reference import FeatureTable, compute_features, load_table


@pytest.fixture(scope="module")
def reference(reference_csv: Path) -> FeatureTable:
    return load_table(reference_csv)


def _current(root: Path) -> FeatureTable:
    return compute_features(root, "test", show_progress=False)


def test_same_distribution_does_not_drift(reference: FeatureTable, drift_data: DriftData) -> None:
    result = run_drift(reference, _current(drift_data.same), threshold=0.3)
    assert not result.drifted
    assert result.share <= 0.3
    assert result.n_reference == result.n_current == 40
    # Every sample photo is 48x48: nothing to learn from those columns.
    assert {"width", "height", "aspect"} <= set(result.skipped)
    assert {f.feature for f in result.features} >= {"brightness", "sharpness", "contrast"}
    assert all(f.test == "K-S p_value" for f in result.features)


def test_brighter_photos_drift_on_brightness(
    reference: FeatureTable, drift_data: DriftData
) -> None:
    result = run_drift(reference, _current(drift_data.bright), threshold=0.3)
    verdict = {f.feature: f for f in result.features}
    assert verdict["brightness"].drifted
    assert verdict["brightness"].score < 1e-6
    assert result.drifted
    assert result.features[0].drifted  # drifted features come first


def test_blurred_photos_drift_on_sharpness(reference: FeatureTable, drift_data: DriftData) -> None:
    result = run_drift(reference, _current(drift_data.blurred), threshold=0.3)
    verdict = {f.feature: f for f in result.features}
    assert verdict["sharpness"].drifted
    assert not verdict["brightness"].drifted
    assert result.drifted


def test_too_few_current_samples_is_a_clear_error(
    reference: FeatureTable, drift_data: DriftData
) -> None:
    few = _current(drift_data.same).subset(0, 12)
    with pytest.raises(DataError, match=r"only 12 current samples.*at least 30") as err:
        run_drift(reference, few)
    assert err.value.exit_code == 2


def test_report_files_and_summary_round_trip(
    reference: FeatureTable, drift_data: DriftData, tmp_path: Path
) -> None:
    result = run_drift(reference, _current(drift_data.bright), threshold=0.3)
    paths = save_report(result, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == [
        "evidently.json",
        "report.html",
        "report.json",
    ]
    summary = json.loads(paths["report.json"].read_text())
    assert summary["drifted"] is True
    assert summary["n_current"] == 40
    again = DriftResult.from_dict(summary)
    assert again.share == result.share
    assert again.drifted_features == result.drifted_features
    assert "<html" in paths["report.html"].read_text()[:2000].lower()
    evidently = json.loads(paths["evidently.json"].read_text())
    assert {"metrics", "tests"} <= set(evidently)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_threshold_out_of_range_is_refused(reference: FeatureTable) -> None:
    with pytest.raises(DataError, match="not a share"):
        run_drift(reference, reference, threshold=1.5)


def test_a_value_the_reference_never_had_drifts_without_numpy_warnings() -> None:
    """A class share absent from the reference: chi-square's expected count is 0 (statistic
    inf), which rightly counts as drift; numpy's divide-by-zero warning is not for the user."""
    import warnings

    import numpy as np

    rng = np.random.default_rng(0)

    def table(shares: list[float], source: str) -> FeatureTable:
        rows = [{"brightness": float(rng.normal(0.5, 0.1)), "share_orange": s} for s in shares]
        return FeatureTable(["brightness", "share_orange"], rows, source)

    reference = table([0.0, 0.25] * 20, "reference")
    current = table([0.0, 0.5] * 10, "current")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = run_drift(reference, current, min_samples=10)
    drifted = {f.feature for f in result.features if f.drifted}
    assert "share_orange" in drifted
