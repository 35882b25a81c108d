"""Bring a downloaded FoodSeg103 into a project's ``data/`` folder and version it with DVC.

Accepted sources: the extracted folder (``Images/`` and ``category_id.txt``, at the top or one
level down as in the official zip's ``FoodSeg103/``), a ``.zip`` of it (the official one is
password protected), or a folder of Hugging Face parquet files, which is kept as parquet.
The source is checked with the same readers that train on it before anything is copied, and the
copy is built beside the destination and renamed into place, so ``data/NAME`` is either complete
or absent.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cmi_cli.console import err_console, is_quiet
from cmi_cli.data.layout import LAYOUT_HINT, open_dataset
from cmi_cli.errors import CmiError, DataError, UsageError

PASSWORD_ENV = "CMI_ZIP_PASSWORD"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def find_dataset_root(folder: Path) -> Path:
    """Return ``folder`` or its one sub-folder that holds a FoodSeg103 dataset.

    Args:
        folder: An extracted download.

    Raises:
        DataError: If neither the folder nor exactly one sub-folder is a readable dataset.
    """
    if _looks_like_dataset(folder):
        # Report what is wrong with this dataset rather than searching below it.
        _check_dataset(folder)
        return folder
    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = [child for child in children if _looks_like_dataset(child)]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"{folder} holds several datasets ({names})", hint="import one of them")
    if not found:
        unnamed = _parquet_without_split(folder)
        if unnamed:
            raise DataError(
                f"{folder} holds parquet files whose name names no split "
                f"({', '.join(unnamed[:3])}); the Hugging Face export names them "
                "train-*.parquet and validation-*.parquet (or puts them in train/ and "
                "validation/ folders)",
                hint="rename them so each names its split, then run `cmi data import` again",
            )
        raise DataError(
            f"{folder} is not a FoodSeg103 dataset (nor is any folder in it)", hint=LAYOUT_HINT
        )
    _check_dataset(found[0])
    return found[0]


def _parquet_without_split(folder: Path) -> list[str]:
    """Parquet files under ``folder`` whose names and folders name no split."""
    from cmi_cli.data.parquet import split_of

    return [
        p.relative_to(folder).as_posix()
        for p in sorted(folder.rglob("*.parquet"))
        if split_of(p, folder) is None
    ]


def _single_parquet_error(src: Path) -> DataError:
    return DataError(
        f"{src} is a single parquet file; `cmi data import` takes the folder of the Hugging "
        "Face export, which holds train-*.parquet and validation-*.parquet (columns image and "
        "label)",
        hint=f"run `cmi data import {src.parent}` (the folder holding the parquet files)",
    )


def _looks_like_dataset(folder: Path) -> bool:
    from cmi_cli.data.parquet import find_parquet_files

    markers = ("Images", "img_dir", "ann_dir")
    return any((folder / m).is_dir() for m in markers) or bool(find_parquet_files(folder))


def _check_dataset(root: Path) -> int:
    """Open ``root`` with the training readers and count its pairs; raise if unreadable."""
    source = open_dataset(root)
    count = sum(len(source.items(split)) for split in source.splits())
    if count == 0:
        raise DataError(f"{root} has no images in any split")
    return count


def import_foodseg103(
    src: Path,
    project_root: Path | None = None,
    name: str = "foodseg103",
    overwrite: bool = False,
    password: str | None = None,
    track_data: bool = True,
    show_progress: bool = True,
) -> Path:
    """Copy FoodSeg103 from ``src`` into ``PROJECT/data/NAME`` and track it with DVC.

    Args:
        src: The extracted folder, a ``.zip`` of it, or a folder of parquet files.
        project_root: The project; found from the current directory when ``None``.
        name: The folder name under ``data/``.
        overwrite: Replace ``data/NAME`` if it exists.
        password: Password of an encrypted zip; ``$CMI_ZIP_PASSWORD`` when ``None``.
        track_data: Run ``dvc add`` on the result and stage its ``.dvc`` file in git.
        show_progress: Show a progress bar on stderr (never under ``--quiet``).

    Returns:
        The dataset folder in the project.

    Raises:
        DataError: If ``src`` is missing, not a dataset, an unreadable zip, or ``data/NAME``
            exists and ``overwrite`` is false.
        UsageError: If ``name`` is not a plain folder name.
        DvcError: If there is no project or DVC cannot track the data.
    """
    from cmi_cli.data.versioning import find_project_root, track

    src = Path(src).expanduser().absolute()
    if not _NAME.fullmatch(name):
        raise UsageError(f"--name {name!r} must be a plain folder name (letters, digits, ._-)")
    if not src.exists():
        raise DataError(f"{src} does not exist", hint="give the downloaded folder or .zip file")
    root = find_project_root(project_root)
    dest = root / "data" / name
    if dest.exists() and not overwrite:
        raise DataError(
            f"{dest} already exists", hint="pass --overwrite to replace it, or choose --name"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.import-", dir=dest.parent) as tmp:
        staged = Path(tmp) / "staged"
        if src.is_file() and _is_parquet(src):
            raise _single_parquet_error(src)
        if src.is_file():
            found = _extract_zip(src, Path(tmp) / "zip", password, show_progress)
            os.replace(found, staged)
        else:
            found = find_dataset_root(src)
            _copy_tree(found, staged, show_progress)
            _check_dataset(staged)
        _swap_into_place(staged, dest)
    if track_data:
        try:
            track([dest], cwd=root)
        except CmiError as exc:
            exc.hint = f"the data is complete in {dest}: track it with `dvc add {dest}`"
            raise
    return dest


def _is_parquet(path: Path) -> bool:
    """Whether ``path`` is a parquet file (by its name or its ``PAR1`` magic bytes)."""
    if path.suffix.lower() == ".parquet":
        return True
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def _swap_into_place(staged: Path, dest: Path) -> None:
    """Rename ``staged`` to ``dest``; an old ``dest`` is kept until the new one is in place."""
    if not dest.exists():
        os.replace(staged, dest)
        return
    old = staged.with_name("old")
    os.replace(dest, old)
    try:
        os.replace(staged, dest)
    except OSError:
        os.replace(old, dest)
        raise


@contextmanager
def _progress(label: str, total: int, show: bool) -> Iterator[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console(),
        disable=is_quiet() or not show,
        transient=True,
    )
    with progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)


def _copy_tree(src: Path, dst: Path, show: bool) -> None:
    def skip_hidden(_folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n.startswith(".")]

    total = sum(len(files) for _, _, files in os.walk(src))
    with _progress("copying", total, show) as advance:

        def copy(a: str, b: str) -> Any:
            result = shutil.copy2(a, b)
            advance()
            return result

        # Symlinks are followed: a Hugging Face snapshot links its files into a blob cache.
        shutil.copytree(src, dst, ignore=skip_hidden, copy_function=copy)


def _extract_zip(src: Path, into: Path, password: str | None, show: bool) -> Path:
    """Extract a dataset zip into ``into`` and return the dataset root inside it."""
    try:
        archive = zipfile.ZipFile(src)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{src} is neither a folder nor a readable zip file ({exc})") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        names = [m.filename for m in members]
        if not any(("img_dir/" in n and n.endswith((".jpg", ".png"))) for n in names) and not any(
            n.endswith(".parquet") for n in names
        ):
            raise DataError(f"{src} holds no FoodSeg103 images or parquet files", hint=LAYOUT_HINT)
        secret = password if password is not None else os.environ.get(PASSWORD_ENV)
        if any(m.flag_bits & 0x1 for m in members):
            if not secret:
                raise DataError(
                    f"{src} is password protected",
                    hint=f"set {PASSWORD_ENV} to the password from the dataset's download "
                    "instructions (or name another variable with --password-env)",
                )
            archive.setpassword(secret.encode("utf-8"))
        with _progress("extracting", len(members), show) as advance:
            for member in members:
                try:
                    archive.extract(member, into)
                except RuntimeError as exc:
                    if "password" not in str(exc).lower():
                        raise
                    raise DataError(
                        f"wrong password for {src}", hint=f"check the password in ${PASSWORD_ENV}"
                    ) from exc
                except NotImplementedError as exc:
                    raise DataError(
                        f"{src} uses a compression or encryption method Python cannot read ({exc})",
                        hint="extract it with `7z x` or `unzip` and import the folder",
                    ) from exc
                except (zipfile.BadZipFile, OSError) as exc:
                    raise DataError(f"cannot extract {member.filename} from {src}: {exc}") from exc
                advance()
    return find_dataset_root(into)
