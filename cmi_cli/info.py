"""``cmi info``: describe a dataset folder or an artifact from what it records about itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cmi_cli.errors import ArtifactError, DataError


def describe_dataset(root: Path) -> dict[str, Any]:
    """Describe a dataset folder: layout, split sizes, class count and DVC version.

    Args:
        root: Dataset root in the official layout or the parquet export.
    """
    from cmi_cli.data.layout import open_dataset
    from cmi_cli.data.versioning import data_version

    source = open_dataset(root)
    return {
        "kind": "dataset",
        "path": str(root),
        "layout": source.kind,
        "splits": {split: len(source.items(split)) for split in source.splits()},
        "num_classes": len(source.class_names),
        "dvc_md5": data_version(root) or "untracked",
    }


def describe(path: Path) -> dict[str, Any]:
    """Return the record ``cmi info`` prints for ``path``.

    Raises:
        ArtifactError: If the path does not exist or is of an unknown kind.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no such file or folder: {path}", hint="Check the path")
    if path.is_dir():
        try:
            return describe_dataset(path)
        except DataError as exc:
            raise ArtifactError(
                f"{path} is not a dataset folder cmi understands ({exc.message})",
                hint="Pass a dataset root holding Images/ or parquet files",
            ) from None
    raise ArtifactError(
        f"cmi info does not know this kind of file yet: {path.name}",
        hint="This version describes dataset folders",
    )


def render_description(record: dict[str, Any], console: Console) -> None:
    """Print a record from :func:`describe` as a two-column table."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in record.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        table.add_row(key, str(value))
    console.print(table)
