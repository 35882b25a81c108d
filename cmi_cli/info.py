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
    if path.suffix == ".ckpt":
        return describe_checkpoint(path)
    if path.suffix == ".onnx":
        return describe_onnx(path)
    raise ArtifactError(
        f"cmi info does not know this kind of file: {path.name}",
        hint="Pass a dataset folder, a .ckpt checkpoint or a .onnx model",
    )


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """Describe a checkpoint from its lineage: model, size and cost, data, code, metrics.

    Args:
        path: A ``.ckpt`` written by ``cmi train``.
    """
    from cmi_cli.models.complexity import count_flops, count_parameters
    from cmi_cli.training.checkpoint import load_model

    # The network as loaded (a pruned one has fewer channels than its params describe).
    net, lineage = load_model(path)
    model = lineage.get("model", {})
    size = int(lineage.get("preprocessing", {}).get("image_size", 256))
    cost = {
        "num_parameters": count_parameters(net),
        "gflops": count_flops(net, (1, 3, size, size)) / 1e9,
    }
    record: dict[str, Any] = {
        "kind": "checkpoint",
        "path": str(path),
        "created_at": lineage.get("created_at"),
        "model": {
            "name": model["name"],
            **_zoo_fields(model),
            "params": model.get("params"),
            "parameters": cost["num_parameters"],
            f"gflops@{size}x{size}": round(cost["gflops"], 3),
        },
        **_provenance(lineage),
        "config": lineage.get("config"),
    }
    if "prune" in lineage:
        record["prune"] = lineage["prune"]
    if "parent" in lineage:
        record["parent"] = lineage["parent"]
    return record


def describe_onnx(path: Path) -> dict[str, Any]:
    """Describe an ONNX model from its lineage metadata and graph (imports no torch).

    Args:
        path: A ``.onnx`` written by ``cmi export onnx`` (or derived from one).
    """
    from cmi_cli.export.ort_predict import OnnxPredictor

    predictor = OnnxPredictor(path, graph_optimization_level="disable")
    lineage = predictor.lineage
    model = lineage.get("model", {})
    session = predictor.session
    return {
        "kind": lineage.get("kind", "onnx"),
        "path": str(path),
        "file_size": _human_size(Path(path).stat().st_size),
        "created_at": lineage.get("created_at"),
        "model": {
            "name": model.get("name"),
            **_zoo_fields(model),
            "params": model.get("params"),
            "parameters": model.get("parameters"),
        },
        "graph": {
            "inputs": ", ".join(f"{i.name} {i.type} {i.shape}" for i in session.get_inputs()),
            "outputs": ", ".join(f"{o.name} {o.type} {o.shape}" for o in session.get_outputs()),
            "producer": session.get_modelmeta().producer_name,
        },
        **_provenance(lineage),
        "parent": {k: v for k, v in lineage.get("parent", {}).items() if k != "code"},
        "export": _export_summary(lineage.get("export", {})),
        # A derived model (int8) records its own checks against its parent at the top level.
        **({"validation": _own_checks(lineage["validation"])} if lineage.get("validation") else {}),
        "config": lineage.get("config"),
    }


def _zoo_fields(model: dict[str, Any]) -> dict[str, Any]:
    """Architecture, encoder and the source of its initial weights, as lineage records them.

    Artifacts made before the zoo lack these keys; they show as n/a.
    """
    weights = model.get("weights") or {}
    source = weights.get("source")
    if source == "file":
        source = f"file {weights.get('path')} (sha256 {weights.get('sha256')})"
    return {
        "architecture": model.get("architecture"),
        "encoder": model.get("encoder"),
        "weights": source,
    }


def _own_checks(validation: dict[str, Any]) -> dict[str, Any]:
    checks = validation.get("checks", {})
    passed = sum(status == "pass" for status in checks.values())
    return {
        "checks_passed": f"{passed} of {len(checks)}",
        **{k: v for k, v in validation.items() if k != "checks"},
    }


def _provenance(lineage: dict[str, Any]) -> dict[str, Any]:
    """What any model artifact says of where it came from: classes, inputs, data, code, scores."""
    return {
        "classes": {"count": lineage.get("num_classes"), "names": lineage.get("class_names")},
        "preprocessing": lineage.get("preprocessing"),
        "data": lineage.get("data"),
        "code": lineage.get("code"),
        "metrics": lineage.get("metrics"),
    }


def _export_summary(export: dict[str, Any]) -> dict[str, Any]:
    axes = export.get("dynamic_axes")
    summary = {
        "exporter": export.get("exporter"),
        "opset": export.get("opset"),
        "torch": export.get("torch"),
        "dynamic_axes": ", ".join(axes.get("image", {}).values()) if axes else "none (static)",
    }
    validation = export.get("validation")
    if validation:
        checks = validation.get("checks", {})
        passed = sum(status == "pass" for status in checks.values())
        summary["validation"] = {
            "checks_passed": f"{passed} of {len(checks)}",
            "inputs": validation.get("inputs"),
            "max_abs_diff": validation.get("max_abs_diff"),
            "argmax_agreement": validation.get("argmax_agreement"),
            "atol": validation.get("atol"),
        }
    return summary


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{size} B" if unit == "B" else f"{value:.2f} {unit} ({size} bytes)"
        value /= 1000
    return f"{value:.2f} GB ({size} bytes)"


def _rows(record: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if key == "config":
            rows.append((name, "(the composed training config: see --json)"))
        elif key == "names" and isinstance(value, list):
            shown = ", ".join(value[:6]) + (
                f", ... ({len(value)} in all)" if len(value) > 6 else ""
            )
            rows.append((name, shown))
        elif isinstance(value, dict) and value:
            rows.extend(_rows(value, f"{name}."))
        else:
            rows.append((name, "n/a" if value is None else str(value)))
    return rows


def render_description(record: dict[str, Any], console: Console) -> None:
    """Print a record from :func:`describe` as a two-column table (nested keys dotted)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in _rows(record):
        table.add_row(key, value)
    console.print(table)


def render_presets(presets: list[dict[str, Any]], console: Console) -> None:
    """Print the model presets of :func:`cmi_cli.models.presets.model_presets` as a table."""
    table = Table(title="model presets: cmi train model=NAME (then model.KEY=VALUE to change one)")
    for column in ("preset", "architecture", "encoder", "weights", "description"):
        table.add_column(column, overflow="fold")
    for row in presets:
        table.add_row(*("-" if row[c] is None else str(row[c]) for c in table_columns(table)))
    console.print(table)


def table_columns(table: Table) -> list[str]:
    """Return the header names of ``table``'s columns."""
    return [str(column.header) for column in table.columns]
