"""Where things live in a cmi project, and how a missing dataset is reported."""

from __future__ import annotations

from pathlib import Path

from cmi_cli.errors import DataError

DEFAULT_DATA_ROOT = Path("data") / "foodseg103"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_REPORTS_DIR = Path("reports")
# The embedded sample's default size: enough photos for the default model to generalise
# (192 train / 64 test) while `cmi quickstart` stays within minutes on a laptop CPU.
SAMPLE_IMAGES = 256
SAMPLE_SIZE = 256


def resolve_data_root(root: Path | None = None) -> Path:
    """Return an existing dataset root, defaulting to ``data/foodseg103`` under the cwd.

    Args:
        root: The folder a user named, or None for the project default.

    Raises:
        DataError: If the folder does not exist.
    """
    path = Path(root) if root is not None else DEFAULT_DATA_ROOT
    if not path.exists():
        if root is None:
            raise DataError(
                f"no dataset at {path} (the default)",
                hint="Run 'cmi init' to make a project with the sample, "
                "'cmi data sample', or pass the dataset folder",
            )
        raise DataError(f"dataset folder not found: {path}", hint="Check the path")
    if not path.is_dir():
        raise DataError(f"not a dataset folder: {path}", hint="Pass the folder that holds Images/")
    return path
