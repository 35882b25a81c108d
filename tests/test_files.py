"""Atomic writes: nothing half-written, and artifacts readable by other users."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cmi_cli.utils.files import atomic_path, atomic_write_text, publish, temp_beside


def test_atomic_write_is_readable_by_others(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a.txt", "hi")
    assert path.read_text() == "hi"
    assert path.stat().st_mode & stat.S_IROTH


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def write_half() -> None:
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_half()
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_publish_to_a_name_chosen_late(tmp_path: Path) -> None:
    tmp = temp_beside(tmp_path / "model.onnx", ".onnx")
    tmp.write_bytes(b"x")
    dest = publish(tmp, tmp_path / "model.REJECTED.onnx")
    assert dest.read_bytes() == b"x"
    assert dest.stat().st_mode & stat.S_IROTH
    assert not tmp.exists()
