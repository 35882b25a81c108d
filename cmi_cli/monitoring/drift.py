"""Drift of current features against a reference, judged by Evidently's ``DataDriftPreset``.

Each numeric column gets Evidently's automatic test (Kolmogorov-Smirnov p-value below 1000
reference rows, Wasserstein distance above), and the dataset drifts when the share of drifted
columns exceeds a threshold. Columns that are constant in both tables (every photo 512 px wide)
carry no signal and are left out. Evidently and pandas are imported only when a check runs.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmi_cli.errors import DataError
from cmi_cli.monitoring.reference import FeatureTable

DEFAULT_THRESHOLD = 0.2
DEFAULT_MIN_SAMPLES = 30


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one feature.

    Attributes:
        feature: Column name.
        test: Evidently's name of the test used (``K-S p_value``, ``Wasserstein distance
            (normed)`` ...).
        score: The test's score (a p-value, or a distance).
        threshold: The score beyond which the feature drifts.
        drifted: Whether the feature drifted.
    """

    feature: str
    test: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    """The outcome of a drift check.

    Attributes:
        features: One verdict per compared feature, drifted first.
        share: Share of compared features that drifted.
        threshold: The share above which the data counts as drifted.
        n_reference: Reference rows.
        n_current: Current rows.
        reference: Where the reference came from.
        current: Where the current data came from.
        skipped: Columns left out (constant, or present in only one table).
        snapshot: Evidently's ``Snapshot`` (None once loaded back from JSON).
    """

    features: list[FeatureDrift]
    share: float
    threshold: float
    n_reference: int
    n_current: int
    reference: str = ""
    current: str = ""
    skipped: list[str] = field(default_factory=list)
    snapshot: Any = None
    created_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def drifted(self) -> bool:
        """Whether the share of drifted features exceeds the threshold."""
        return self.share > self.threshold

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted features."""
        return [f.feature for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON summary (what ``report.json`` and ``GET /v1/drift`` hold)."""
        return {
            "created_at": self.created_at,
            "drifted": self.drifted,
            "share": self.share,
            "threshold": self.threshold,
            "n_features": len(self.features),
            "n_drifted": len(self.drifted_features),
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "reference": self.reference,
            "current": self.current,
            "skipped": list(self.skipped),
            "features": [
                {
                    "feature": f.feature,
                    "test": f.test,
                    "score": f.score,
                    "threshold": f.threshold,
                    "drifted": f.drifted,
                }
                for f in self.features
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        """Rebuild a result from :meth:`to_dict` (a saved report or a server's answer).

        Raises:
            DataError: If ``data`` is not such a summary.
        """
        try:
            feats = [
                FeatureDrift(
                    str(f["feature"]),
                    str(f["test"]),
                    float(f["score"]),
                    float(f["threshold"]),
                    bool(f["drifted"]),
                )
                for f in data["features"]
            ]
            return cls(
                feats, float(data["share"]), float(data["threshold"]),
                int(data["n_reference"]), int(data["n_current"]),
                str(data.get("reference", "")), str(data.get("current", "")),
                list(data.get("skipped", [])), None, str(data.get("created_at", "")),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"not a drift summary ({exc!r} missing or invalid)",
                hint="Pass a report.json from 'cmi drift-check' or a cmi serve URL",
                exit_code=2,
            ) from None


def compared_columns(reference: FeatureTable, current: FeatureTable) -> tuple[list[str], list[str]]:
    """Return ``(columns to compare, columns skipped)``: shared and not constant in both."""
    shared = [c for c in reference.columns if c in current.columns]
    skipped = [c for c in reference.columns if c not in shared]
    skipped += [c for c in current.columns if c not in reference.columns]
    kept: list[str] = []
    for col in shared:
        values = {r[col] for r in reference.rows} | {r[col] for r in current.rows}
        (kept if len(values) > 1 else skipped).append(col)
    return kept, skipped


def check_sizes(reference: FeatureTable, current: FeatureTable, min_samples: int) -> None:
    """Refuse tables too small for a meaningful test.

    Raises:
        DataError: If either table has fewer than ``min_samples`` rows (exit status 2).
    """
    for what, table, hint in (
        (
            "current",
            current,
            "Wait for more traffic, widen --window/--since, or lower --min-samples",
        ),
        ("reference", reference, "Use a larger reference split, or lower --min-samples"),
    ):
        if len(table) < min_samples:
            raise DataError(
                f"only {len(table)} {what} samples{_from(table)}; a drift check needs at least "
                f"{min_samples}",
                hint=hint,
                exit_code=2,
            )


def _from(table: FeatureTable) -> str:
    return f" in {table.source}" if table.source else ""


def run_drift(
    reference: FeatureTable,
    current: FeatureTable,
    threshold: float = DEFAULT_THRESHOLD,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    per_column_method: dict[str, str] | None = None,
    columns: list[str] | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` column by column with Evidently.

    Args:
        reference: The model's reference features.
        current: The features to judge.
        threshold: Share of drifted features above which the data counts as drifted.
        min_samples: Fewest rows either table may have.
        per_column_method: Evidently stattest names by column (``"psi"``, ``"wasserstein"``...).
        columns: Compare only these columns (default: all shared, non-constant ones).

    Raises:
        DataError: If a table is too small or no column can be compared (exit status 2).
    """
    import numpy as np

    if not 0 <= threshold <= 1:
        raise DataError(f"drift threshold {threshold} is not a share in [0, 1]", exit_code=2)
    check_sizes(reference, current, min_samples)
    kept, skipped = compared_columns(reference, current)
    if columns is not None:
        skipped += [c for c in kept if c not in columns]
        kept = [c for c in kept if c in columns]
    if not kept:
        raise DataError(
            f"no feature to compare between {reference.source or 'the reference'} and "
            f"{current.source or 'the current data'}",
            hint="Both must be cmi feature tables with varying values",
            exit_code=2,
        )
    # Two numpy warnings are understood and expected: a feature constant in one table has zero
    # variance (its correlation is NaN, and Evidently leaves it out), and a value the reference
    # never had has an expected count of 0 (chi-square is inf: the feature rightly drifts).
    # errstate is per thread, so no other thread's warnings are hidden.
    with np.errstate(divide="ignore", invalid="ignore"):
        snapshot = _evidently_report(reference, current, kept, threshold, per_column_method)
    features = parse_snapshot(snapshot.dict())
    features.sort(key=lambda f: (not f.drifted, f.feature))
    share = sum(f.drifted for f in features) / len(features)
    return DriftResult(
        features, share, threshold, len(reference), len(current),
        reference.source, current.source, skipped, snapshot,
    )  # fmt: skip


def _evidently_report(
    reference: FeatureTable,
    current: FeatureTable,
    columns: list[str],
    threshold: float,
    per_column_method: dict[str, str] | None,
) -> Any:
    import pandas as pd

    DataDefinition, Dataset, Report, DataDriftPreset = import_evidently()
    definition = DataDefinition(numerical_columns=columns)

    def dataset(table: FeatureTable) -> Any:
        frame = pd.DataFrame([{c: r[c] for c in columns} for r in table.rows], columns=columns)
        return Dataset.from_pandas(frame, data_definition=definition)

    methods = {k: v for k, v in (per_column_method or {}).items() if k in columns} or None
    preset = DataDriftPreset(columns=columns, drift_share=threshold, per_column_method=methods)
    report = Report([preset], include_tests=True)
    return report.run(dataset(current), dataset(reference))


def import_evidently() -> tuple[Any, Any, Any, Any]:
    """Import Evidently's 0.7 API: ``(DataDefinition, Dataset, Report, DataDriftPreset)``.

    Its web-UI dependencies warn about their own deprecations on import; not ours to fix.

    Raises:
        UsageError: If Evidently is missing or cannot import (pandas 3 breaks 0.7.x).
    """
    import warnings

    from cmi_cli.errors import UsageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from evidently import DataDefinition, Dataset, Report
            from evidently.presets import DataDriftPreset
    except ImportError as exc:
        raise UsageError(
            f"Evidently cannot be imported ({exc})",
            hint="pip install 'evidently>=0.7,<0.8' 'pandas<3'",
        ) from None
    return DataDefinition, Dataset, Report, DataDriftPreset


def parse_snapshot(data: dict[str, Any]) -> list[FeatureDrift]:
    """Read per-column verdicts from an Evidently 0.7 snapshot's ``dict()``.

    Each ``ValueDrift`` metric holds the column, method, threshold and score; its test
    (``status`` FAIL) says whether the column drifted.
    """
    status_by_metric = {
        t["metric_config"]["metric_id"]: t["status"]
        for t in data.get("tests", [])
        if t.get("metric_config", {}).get("params", {}).get("type", "").endswith(":ValueDrift")
    }
    out = []
    for metric in data.get("metrics", []):
        config = metric.get("config", {})
        if not config.get("type", "").endswith(":ValueDrift"):
            continue
        score = float(metric["value"])
        status = status_by_metric.get(metric["id"])
        method, limit = str(config.get("method")), float(config.get("threshold"))
        drifted = status == "FAIL" if status is not None else _beyond(method, score, limit)
        out.append(FeatureDrift(str(config["column"]), method, score, limit, drifted))
    return out


def _beyond(method: str, score: float, threshold: float) -> bool:
    """Evidently's rule when no test verdict is present: p-values drift below, distances above."""
    return score < threshold if "p_value" in method else score >= threshold


def save_report(result: DriftResult, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json`` (our summary), ``report.html`` and ``evidently.json`` (Evidently's).

    Each file is written atomically; other files in ``out_dir`` are left alone.
    """
    from cmi_cli.utils.files import atomic_write_text

    out_dir = Path(out_dir)
    texts = {"report.json": json.dumps(result.to_dict(), indent=2)}
    if result.snapshot is not None:
        texts["report.html"] = result.snapshot.get_html_str(as_iframe=False)
        texts["evidently.json"] = result.snapshot.json()
    return {name: atomic_write_text(out_dir / name, text) for name, text in texts.items()}


def default_out_dir(root: Path | None = None) -> Path:
    """``reports/drift/<UTC timestamp>/`` under ``root`` (default: the current folder)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return (root or Path.cwd()) / "reports" / "drift" / stamp


def render_drift(result: DriftResult, console: Any) -> None:
    """Print each feature's test, score and verdict, then the share of drifted features."""
    from rich.table import Table

    table = Table(
        title=f"Drift: {result.n_current} current vs {result.n_reference} reference samples"
    )
    for col, justify in (("feature", "left"), ("test", "left"), ("score", "right"),
                         ("threshold", "right"), ("drifted", "center")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for f in result.features:
        mark = "[red]yes[/red]" if f.drifted else "[green]no[/green]"
        table.add_row(f.feature, f.test, f"{f.score:.4g}", f"{f.threshold:.4g}", mark)
    console.print(table)
    verdict = "[red]DRIFT[/red]" if result.drifted else "[green]no drift[/green]"
    console.print(
        f"{verdict}: {len(result.drifted_features)} of {len(result.features)} features drifted "
        f"(share {result.share:.2f}, threshold {result.threshold:.2f})"
    )
