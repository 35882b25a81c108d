"""Evidently imports beside the installed pandas (0.7.x breaks with pandas 3), lazily."""

from __future__ import annotations

import subprocess
import sys


def test_evidently_0_7_api_imports_with_this_pandas() -> None:
    import pandas

    from cmi_cli.monitoring.drift import import_evidently

    assert int(pandas.__version__.split(".")[0]) < 3, (
        f"pandas {pandas.__version__}: evidently 0.7 fails to import beside pandas 3 "
        "(infer_dtype_from_object); keep the pandas<3 pin in pyproject"
    )
    data_definition, dataset, report, preset = import_evidently()
    assert report.__name__ == "Report"
    assert preset.__name__ == "DataDriftPreset"
    assert dataset.__name__ == "Dataset"
    assert data_definition.__name__ == "DataDefinition"


def test_the_cli_and_the_drift_modules_import_no_pandas_or_evidently() -> None:
    code = (
        "import sys; import cmi_cli.cli.app, cmi_cli.monitoring.drift_service, "
        "cmi_cli.monitoring.sources, cmi_cli.monitoring.robustness; "
        "print(sorted(m for m in ('pandas', 'evidently', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
