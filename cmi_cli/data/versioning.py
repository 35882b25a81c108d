"""Version the project's data with DVC: track, push, pull and status, with errors a user can act on.

DVC is imported inside the functions that need it, so ``cmi --help`` and :func:`data_version`
(called for lineage on every run) never load it. DVC's own log lines and tqdm bars are silenced
while it works: its records are kept to explain a failure, and progress is drawn with rich.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from cmi_cli.data.dvc_errors import RemoteInfo, raise_translated, resolve_remote
from cmi_cli.data.dvc_session import open_repo, quiet_dvc, spinner, transfer_progress
from cmi_cli.errors import DataError, DvcError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "RemoteInfo",
    "StatusResult",
    "TransferResult",
    "data_version",
    "find_project_root",
    "pull",
    "push",
    "quiet_dvc",
    "render_status",
    "status",
    "track",
]

log = logging.getLogger(__name__)
_SHOWN_PATHS = 10
# Workspace states that mean "the data is not here" rather than "the data was edited".
_ABSENT = ("deleted", "not in cache")


@dataclass(frozen=True)
class TransferResult:
    """What a push or pull moved.

    Attributes:
        direction: ``"push"`` or ``"pull"``.
        remote: The remote's name.
        url: The remote's URL (a folder path for a local remote).
        transferred: Files (and directory manifests) copied, as DVC counts them.
        failed: Files that could not be copied (always 0 when no error was raised).
        workspace: For a pull, files ``added``/``modified``/``deleted`` in the workspace.
    """

    direction: Literal["push", "pull"]
    remote: str
    url: str
    transferred: int
    failed: int = 0
    workspace: dict[str, int] = field(default_factory=dict)

    @property
    def up_to_date(self) -> bool:
        """Whether there was nothing to move."""
        return self.transferred == 0 and not any(self.workspace.values())

    def summary(self) -> str:
        """One line for the terminal: ``14 files to remote 'storage' (URL)``, and so on."""
        way = "to" if self.direction == "push" else "from"
        text = f"{self.transferred} files {way} remote '{self.remote}' ({self.url})"
        if self.up_to_date:
            return f"{text}: already up to date"
        changes = ", ".join(f"{n} {what}" for what, n in self.workspace.items() if n)
        return f"{text}; workspace: {changes}" if changes else text


@dataclass(frozen=True)
class StatusResult:
    """Where the data stands against its ``.dvc`` files and the remote.

    Attributes:
        remote: The remote compared against, or ``None`` when none is configured.
        url: That remote's URL.
        workspace: ``(path, change)`` for tracked data that differs from its ``.dvc`` file.
        stages: ``(stage, change)`` for ``dvc.yaml`` stages that are not up to date.
        not_pushed: Files in the local cache that the remote lacks.
        not_pulled: Files on the remote that the local cache lacks.
        missing: Files neither in the local cache nor on the remote.
    """

    remote: str | None
    url: str | None
    workspace: list[tuple[str, str]] = field(default_factory=list)
    stages: list[tuple[str, str]] = field(default_factory=list)
    not_pushed: list[str] = field(default_factory=list)
    not_pulled: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        """Whether the data matches its ``.dvc`` files and the remote holds all of it."""
        return not (self.workspace or self.not_pushed or self.not_pulled or self.missing)


def find_project_root(start: Path | None = None) -> Path:
    """Return the nearest folder at or above ``start`` that holds a ``.dvc/`` folder.

    Args:
        start: Where to begin; the current directory by default.

    Raises:
        DvcError: If no ancestor is a DVC repository.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise DvcError(
        f"not a DVC repository: {here}", hint="run `cmi init` first (or cd into a project)"
    )


def data_version(path: Path) -> str | None:
    """Return the DVC md5 recorded for a tracked path, without importing DVC.

    ``data/foodseg103`` is versioned by ``data/foodseg103.dvc``; a path inside a tracked folder
    gets the folder's version. Directory versions end in ``.dir``. The value is what the ``.dvc``
    file records: edits made since the last ``dvc add`` are not seen.

    Args:
        path: The data folder or file, or its ``.dvc`` file.

    Returns:
        The md5, or ``None`` when no ``.dvc`` file tracks the path (or it cannot be read).
    """
    path = Path(path).absolute()
    if path.suffix == ".dvc" and path.is_file():
        return _md5_of(path)
    for candidate in (path, *path.parents):
        if not candidate.name:
            break
        dvc_file = candidate.with_name(candidate.name + ".dvc")
        if dvc_file.is_file():
            return _md5_of(dvc_file)
        if (candidate / ".dvc").is_dir():
            break
    return None


def _md5_of(dvc_file: Path) -> str | None:
    try:
        doc = yaml.safe_load(dvc_file.read_text("utf-8"))
        md5 = doc["outs"][0]["md5"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        log.warning("cannot read the data version from %s: %s", dvc_file, exc)
        return None
    return str(md5) if md5 else None


def _abs_targets(targets: list[str] | None, cwd: Path | None) -> list[str] | None:
    if not targets:
        return None
    base = Path(cwd or Path.cwd())
    return [str((base / t).absolute()) for t in targets]


def push(
    targets: list[str] | None = None,
    remote: str | None = None,
    jobs: int | None = None,
    cwd: Path | None = None,
    show_progress: bool = True,
) -> TransferResult:
    """Upload tracked data that the remote lacks (``dvc push``).

    Args:
        targets: Tracked paths or ``.dvc`` files to push, relative to ``cwd``; all by default.
        remote: Remote name; the project's default remote when ``None``.
        jobs: Parallel transfers; DVC's default when ``None``.
        cwd: A folder inside the project; the current directory by default.
        show_progress: Draw a progress display on stderr (never under ``--quiet``).

    Returns:
        What was uploaded.

    Raises:
        DvcError: If there is no project or remote, or the remote cannot be written.
    """
    with open_repo(find_project_root(cwd)) as (repo, records):
        info = resolve_remote(repo, remote)
        paths = _abs_targets(targets, cwd)
        try:
            plan = repo.status(targets=paths, cloud=True, remote=info.name, jobs=jobs)
            todo = sum(1 for state in plan.values() if state == "new")
            label = f"pushing {todo} files to {info.name}"
            with transfer_progress(label, todo, info.local_path, show_progress):
                done = repo.push(targets=paths, remote=info.name, jobs=jobs) if todo else 0
        except Exception as exc:
            raise_translated(exc, info, records, "push")
    return TransferResult("push", info.name, info.url, int(done))


def pull(
    targets: list[str] | None = None,
    remote: str | None = None,
    jobs: int | None = None,
    cwd: Path | None = None,
    show_progress: bool = True,
    force: bool = False,
) -> TransferResult:
    """Download tracked data into the cache and check it out into the workspace (``dvc pull``).

    Args:
        targets: Tracked paths or ``.dvc`` files to pull, relative to ``cwd``; all by default.
        remote: Remote name; the project's default remote when ``None``.
        jobs: Parallel transfers; DVC's default when ``None``.
        cwd: A folder inside the project; the current directory by default.
        show_progress: Draw a progress display on stderr (never under ``--quiet``).
        force: Overwrite workspace files that differ from the pulled version.

    Returns:
        What was downloaded and how the workspace changed.

    Raises:
        DvcError: If there is no project or remote, the remote cannot be read, or files are
            missing from it.
    """
    with open_repo(find_project_root(cwd)) as (repo, records):
        info = resolve_remote(repo, remote)
        if info.local_path is not None and not info.local_path.is_dir():
            raise DvcError(
                f"remote '{info.name}' points to {info.local_path}, which does not exist",
                hint="mount or create that folder, or point the remote elsewhere with "
                f"`dvc remote modify {info.name} url PATH`",
            )
        paths = _abs_targets(targets, cwd)
        try:
            plan = repo.status(targets=paths, cloud=True, remote=info.name, jobs=jobs)
            todo = sum(1 for state in plan.values() if state in ("deleted", "missing"))
            cache = Path(repo.cache.local.path)
            label = f"pulling {todo} files from {info.name}" if todo else "checking out"
            with transfer_progress(label, todo, cache, show_progress):
                # Fetch already fails for files the remote lacks; allow_missing lets checkout
                # skip outputs of pipeline stages that were never run (they have no version).
                out = repo.pull(
                    targets=paths, remote=info.name, jobs=jobs, force=force, allow_missing=True
                )
        except Exception as exc:
            raise_translated(exc, info, records, "pull")
    stats = dict(out.get("stats", {}))
    fetched = int(stats.pop("fetched", 0))
    return TransferResult("pull", info.name, info.url, fetched, workspace=stats)


def status(
    targets: list[str] | None = None, remote: str | None = None, cwd: Path | None = None
) -> StatusResult:
    """Compare the workspace with its ``.dvc`` files and the cache with the remote.

    Without a configured remote only the workspace is compared (``remote`` is ``None``).

    Args:
        targets: Tracked paths or ``.dvc`` files to check, relative to ``cwd``; all by default.
        remote: Remote name; the project's default remote when ``None``.
        cwd: A folder inside the project; the current directory by default.

    Raises:
        DvcError: If there is no project, the named remote is unknown, or it cannot be read.
    """
    with open_repo(find_project_root(cwd)) as (repo, records):
        paths = _abs_targets(targets, cwd)
        workspace, stages = _local_changes(repo.status(targets=paths))
        has_default = bool(repo.config.get("core", {}).get("remote"))
        info = resolve_remote(repo, remote) if remote or has_default else None
        if info is None:
            return StatusResult(None, None, workspace, stages)
        try:
            cloud = repo.status(targets=paths, cloud=True, remote=info.name)
        except Exception as exc:
            raise_translated(exc, info, records, "status")
    by_state: dict[str, list[str]] = {"new": [], "deleted": [], "missing": []}
    for path, state in sorted(cloud.items()):
        by_state.setdefault(state, []).append(path)
    return StatusResult(
        info.name,
        info.url,
        workspace,
        stages,
        not_pushed=by_state["new"],
        not_pulled=by_state["deleted"],
        missing=by_state["missing"],
    )


def _local_changes(raw: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split ``repo.status()`` into changed tracked data and out-of-date pipeline stages."""
    workspace: list[tuple[str, str]] = []
    stages: list[tuple[str, str]] = []
    for name, entries in sorted(raw.items()):
        for entry in entries:
            if isinstance(entry, str):
                stages.append((name, entry))
                continue
            for kind, changes in entry.items():
                if not isinstance(changes, dict):
                    stages.append((name, kind))
                elif name.endswith(".dvc") and kind == "changed outs":
                    workspace += [(path, state) for path, state in changes.items()]
                else:
                    detail = ", ".join(f"{p} {s}" for p, s in changes.items())
                    stages.append((name, f"{kind.removeprefix('changed ')} changed: {detail}"))
    return workspace, stages


def render_status(result: StatusResult, console: Console) -> None:
    """Print a status report with the command that fixes each difference.

    Args:
        result: What :func:`status` found.
        console: Where to print.
    """
    from rich.markup import escape

    where = escape(f"remote '{result.remote}' ({result.url})") if result.remote else "no remote"
    if result.in_sync and result.remote:
        console.print(f"[green]data is up to date[/green] with {where}")
    absent = [(path, state) for path, state in result.workspace if state in _ABSENT]
    edited = [(path, state) for path, state in result.workspace if state not in _ABSENT]
    sections: list[tuple[str, list[Any], str]] = [
        ("changed in the workspace", edited, "record them with `dvc add PATH`"),
        ("absent from the workspace", absent, "run `cmi data pull`"),
        ("not pushed", result.not_pushed, "run `cmi data push`"),
        ("not pulled", result.not_pulled, "run `cmi data pull`"),
        (
            "missing from the cache and the remote",
            result.missing,
            "run `cmi data push` where the data was added",
        ),
    ]
    for title, items, fix in sections:
        if not items:
            continue
        console.print(f"[yellow]{len(items)} {title}[/yellow] ({where}): {fix}")
        for item in items[:_SHOWN_PATHS]:
            console.print(escape(f"  {' '.join(item) if isinstance(item, tuple) else item}"))
        if len(items) > _SHOWN_PATHS:
            console.print(f"  ... and {len(items) - _SHOWN_PATHS} more")
    if result.remote is None:
        console.print(
            "[yellow]no DVC remote is configured[/yellow]: run `dvc remote add -d NAME URL`"
        )
    if result.stages:
        names = sorted({name for name, _ in result.stages})
        console.print(f"pipeline stages not up to date: {', '.join(names)} (run `dvc repro`)")


def track(paths: list[Path], cwd: Path | None = None) -> list[Path]:
    """Track files or folders with DVC (``dvc add``) and stage the ``.dvc`` files in git.

    Args:
        paths: Files or folders inside the project.
        cwd: A folder inside the project; the current directory by default.

    Returns:
        The ``.dvc`` files written, one per path.

    Raises:
        DataError: If a path does not exist.
        DvcError: If there is no project or DVC refuses a path (outside the project, already
            an output of a pipeline stage, ...).
    """
    base = Path(cwd or Path.cwd())
    absolute = [(base / p).absolute() for p in paths]
    for path in absolute:
        if not path.exists():
            raise DataError(f"cannot track {path}: it does not exist")
    names = ", ".join(p.name for p in absolute)
    with (
        open_repo(find_project_root(base)) as (repo, _records),
        spinner(f"tracking {names} with DVC"),
    ):
        from dvc.exceptions import DvcException

        # Autostage makes DVC git-add exactly what it wrote: the .dvc files and .gitignore lines.
        repo.scm_context.autostage = True
        try:
            repo.add([str(p) for p in absolute])
        except DvcException as exc:
            raise DvcError(f"dvc add failed: {exc}", hint="rerun with --verbose") from exc
    return [p.with_name(p.name + ".dvc") for p in absolute]
