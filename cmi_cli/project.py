"""Scaffold a cmi project: git and DVC repositories, configs/, sample data, a remote, dvc.yaml.

``cmi init DIR`` leaves a project whose data is versioned and pushed and whose files are committed,
so ``cmi data pull`` on a fresh checkout and ``dvc repro`` work from the first minute.

An existing folder is accepted (a code repository, say) as long as it is not already a DVC project
and holds none of the paths init writes; ``.gitignore`` is extended, never replaced, and only the
files init wrote go into its commit. If a step fails, everything init created is removed again, so
the folder is left as it was.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cmi_cli import __version__
from cmi_cli.console import warn
from cmi_cli.data.dvc_errors import GCP_EXTRA_HINT, local_path_of
from cmi_cli.errors import CmiError, DvcError, UsageError
from cmi_cli.paths import SAMPLE_IMAGES
from cmi_cli.utils.files import atomic_write_text

DATA_NAME = "foodseg103"
REMOTE_NAME = "storage"
# The default remote is a folder inside the project, stored in .dvc/config relative to it: the
# project stays self-contained and relocatable, init writes nothing outside DIR, and removing the
# project removes its storage. It stands in for a shared bucket on a laptop; to share data across
# machines or clones, pass --remote gs://bucket/path (or a folder outside the project).
LOCAL_REMOTE_DIR = ".dvc-storage"
FALLBACK_GIT_IDENTITY = {"user.name": "cmi", "user.email": "cmi@localhost"}
COMMIT_MESSAGE = "Initialise cmi project (cmi init)"
# Resource file -> path in the project; ignore files are merged into any existing ones.
_TEMPLATES = {
    "dvc.yaml": "dvc.yaml",
    "params.yaml": "params.yaml",
    "configs/README.md": "configs/README.md",
    # The data pipeline in CI: a project is where DVC acts, so the workflow lives with it.
    "github/data-change.yml": ".github/workflows/data-change.yml",
}
_IGNORE_FILES = {"gitignore": ".gitignore", "dvcignore": ".dvcignore"}


@dataclass(frozen=True)
class InitResult:
    """What :func:`init_project` made.

    Attributes:
        root: The project folder.
        data_root: The sample dataset (``data/foodseg103``), or ``None`` without a sample.
        remote_name: The default DVC remote's name.
        remote_url: Its URL as written to ``.dvc/config``.
        data_version: The DVC md5 of the sample dataset, or ``None`` without a sample.
        pushed: Files pushed to the remote (0 when the push was skipped).
        committed: Whether the first git commit was made.
    """

    root: Path
    data_root: Path | None
    remote_name: str
    remote_url: str
    data_version: str | None
    pushed: int
    committed: bool


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    except FileNotFoundError as exc:
        raise UsageError(
            "git is not installed", hint="install git and run `cmi init` again"
        ) from exc
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise DvcError(f"git {args[0]} failed: {detail[-1] if detail else exc}") from exc
    return done.stdout.strip()


def _is_git_toplevel(root: Path) -> bool:
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
    except DvcError:
        return False
    return Path(top).resolve() == root.resolve()


def _ensure_git_identity(root: Path) -> None:
    """Set a local identity only where git has none, so the first commit can be made."""
    for key, value in FALLBACK_GIT_IDENTITY.items():
        try:
            _git(root, "config", "--get", key)
        except DvcError:
            _git(root, "config", key, value)


def _template(name: str) -> str:
    return resources.files("cmi_cli").joinpath(f"resources/project/{name}").read_text("utf-8")


def _merge_ignore(path: Path, template: str) -> None:
    """Append the template's patterns that ``path`` lacks, keeping what is already there."""
    if not path.exists():
        atomic_write_text(path, template)
        return
    old = path.read_text("utf-8")
    have = {line.strip() for line in old.splitlines()}
    new = [line for line in template.splitlines() if line.strip() and line.strip() not in have]
    if any(not line.startswith("#") for line in new):
        atomic_write_text(
            path, old + ("" if old.endswith("\n") or not old else "\n") + "\n".join(new) + "\n"
        )


class _Undo:
    """Remember what init created so that a failure can put the folder back as it was."""

    def __init__(self, root: Path):
        self.root = root
        self.created_root = not root.exists()
        self.step = "starting"
        self.paths: list[Path] = []
        self.saved: dict[Path, bytes] = {}

    def will_create(self, *paths: Path) -> None:
        """Note paths about to be written: new ones are removed on failure, files restored."""
        for path in paths:
            if path.is_file():
                self.saved.setdefault(path, path.read_bytes())
            elif not path.exists() and path not in self.paths:
                self.paths.append(path)

    def run(self) -> str:
        """Undo, returning what happened to the folder in words."""
        if self.created_root:
            shutil.rmtree(self.root, ignore_errors=True)
            return f"{self.root} was removed"
        if (self.root / ".git") not in self.paths:
            # An existing repository: unstage what DVC staged before removing it.
            names = [str(p.relative_to(self.root)) for p in [*self.paths, *self.saved]]
            with contextlib.suppress(CmiError):
                _git(self.root, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *names)
        for path in reversed(self.paths):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for path, content in self.saved.items():
            path.write_bytes(content)
        return f"what init wrote in {self.root} was removed"


def _check_directory(root: Path, local_remote: bool) -> None:
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a directory", hint="choose another directory")
    if (root / ".dvc").exists():
        raise DvcError(
            f"{root} is already a DVC project",
            hint="it is already initialised: run `cmi data status` there, or pick a new directory",
        )
    ours = [*_TEMPLATES.values(), "configs", f"data/{DATA_NAME}", f"data/{DATA_NAME}.dvc"]
    if local_remote:
        ours.append(LOCAL_REMOTE_DIR)
    clash = [name for name in dict.fromkeys(ours) if (root / name).exists()]
    if clash:
        raise UsageError(
            f"{root} already has {', '.join(clash)}",
            hint="cmi init never overwrites files: choose an empty directory or move them away",
        )


def _configure_remote(root: Path, remote: str | None) -> str:
    """Set the default DVC remote and return its URL as configured."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from cmi_cli.data.versioning import quiet_dvc

    if remote is None:
        target = root / LOCAL_REMOTE_DIR
        target.mkdir()
        try:
            # DVC stores a cwd-relative path relative to .dvc/, i.e. "../.dvc-storage".
            url = os.path.relpath(target)
        except ValueError:  # another drive on Windows: no relative path exists
            url = str(target)
    else:
        url = remote
    try:
        with quiet_dvc(), Repo(str(root)) as repo, repo.config.edit() as conf:
            conf["remote"][REMOTE_NAME] = {"url": url}
            conf["core"]["remote"] = REMOTE_NAME
    except DvcException as exc:
        raise UsageError(
            f"cannot use {url!r} as a DVC remote: {exc}",
            hint="give a folder path or gs://bucket/path (DVC also takes s3://, azure://, ssh://)",
        ) from exc
    with quiet_dvc(), Repo(str(root)) as repo:
        return str(repo.config["remote"][REMOTE_NAME]["url"])


def init_project(
    directory: Path,
    remote: str | None = None,
    with_sample: bool = True,
    sample_images: int = SAMPLE_IMAGES,
    sample_size: int = 256,
    seed: int = 0,
    show_progress: bool = True,
) -> InitResult:
    """Make a ready project in ``directory``: versioned sample data, a remote, a first commit.

    Args:
        directory: The project folder; created if missing. An existing folder may hold other
            files (even a git repository) but not a DVC project or the paths init writes.
        remote: The default DVC remote: a folder, ``gs://bucket/path`` or any URL DVC supports.
            ``None`` makes a local remote in ``DIRECTORY/.dvc-storage``. Data is pushed only to
            a folder remote; for a cloud remote run ``cmi data push`` afterwards.
        with_sample: Generate the synthetic sample into ``data/foodseg103`` and track it.
        sample_images: Images in the sample.
        sample_size: Width and height of the sample images in pixels.
        seed: Seed of the sample.
        show_progress: Show progress on stderr (never under ``--quiet``).

    Returns:
        What was made.

    Raises:
        DvcError: If the folder is already a DVC project, or git or DVC fails.
        UsageError: If the folder holds paths init would write, or the remote URL is invalid.
    """
    root = Path(directory).absolute()
    is_local = remote is None or local_path_of(remote) is not None
    _check_directory(root, remote is None)
    undo = _Undo(root)
    undo.step = "creating the git repository"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not _is_git_toplevel(root):
            undo.will_create(root / ".git")
            _git(root, "init", "-q")
        _ensure_git_identity(root)

        undo.step = "creating the DVC repository"
        undo.will_create(root / ".dvc", root / ".dvcignore", root / ".gitignore")
        undo.will_create(*(root / target for target in _TEMPLATES.values()), root / "configs")
        if not (root / ".github").exists():
            undo.will_create(root / ".github")
        from dvc.repo import Repo

        from cmi_cli.data.versioning import quiet_dvc

        with quiet_dvc():
            Repo.init(str(root)).close()
        for resource, target in _IGNORE_FILES.items():
            _merge_ignore(root / target, _template(resource))
        for resource, target in _TEMPLATES.items():
            text = _template(resource)
            if resource == "params.yaml":
                text += pipeline_params_yaml()
            text = text.replace("__CMI_VERSION__", __version__)
            atomic_write_text(root / target, text)

        undo.step = "configuring the DVC remote"
        if remote is None:
            undo.will_create(root / LOCAL_REMOTE_DIR)
        remote_url = _configure_remote(root, remote)

        data_root, version, pushed = _add_sample(
            root,
            undo,
            with_sample,
            None if is_local else remote_url,
            sample_images,
            sample_size,
            seed,
            show_progress,
        )
    except BaseException as exc:
        left = undo.run()
        if isinstance(exc, CmiError):
            message = f"cmi init failed while {undo.step} ({left}): {exc.message}"
            raise type(exc)(message, hint=exc.hint) from exc
        if isinstance(exc, Exception):
            raise DvcError(
                f"cmi init failed while {undo.step} ({left}): {type(exc).__name__}: {exc}",
                hint="fix the cause and run `cmi init` again (--verbose shows the traceback)",
            ) from exc
        raise
    committed = _commit(root)
    return InitResult(root, data_root, REMOTE_NAME, remote_url, version, pushed, committed)


def _add_sample(
    root: Path,
    undo: _Undo,
    with_sample: bool,
    cloud_remote: str | None,
    images: int,
    size: int,
    seed: int,
    show_progress: bool,
) -> tuple[Path | None, str | None, int]:
    """Generate, track and push the sample; return its root, md5 and files pushed.

    A folder remote that cannot be written fails init (it is undone); a cloud remote that
    cannot be reached leaves the project, with a warning to push later.
    """
    if not with_sample:
        return None, None, 0
    from cmi_cli.data.sample import generate_sample
    from cmi_cli.data.versioning import data_version, push, track

    data_root = root / "data" / DATA_NAME
    undo.will_create(root / "data", data_root, root / "data" / f"{DATA_NAME}.dvc")
    undo.will_create(root / "data" / ".gitignore")
    undo.step = "generating the sample dataset"
    generate_sample(data_root, images=images, size=size, seed=seed, show_progress=show_progress)
    undo.step = "tracking the sample with DVC"
    track([data_root], cwd=root)
    undo.step = "pushing the sample to the remote"
    version = data_version(data_root)
    remote = cloud_remote
    if remote is None:
        return data_root, version, push(cwd=root, show_progress=show_progress).transferred
    if remote.startswith("gs://") and importlib.util.find_spec("dvc_gs") is None:
        _warn_not_pushed(remote, f"{GCP_EXTRA_HINT}, then run `cmi data push`")
        return data_root, version, 0
    try:
        pushed = push(cwd=root, show_progress=show_progress).transferred
    except DvcError as exc:
        _warn_not_pushed(remote, f"{exc.one_line()}; then run `cmi data push`")
        return data_root, version, 0
    return data_root, version, pushed


def _warn_not_pushed(remote: str, fix: str) -> None:
    from rich.markup import escape

    # escape: "[gcp]" would otherwise read as rich markup and vanish.
    warn(escape(f"the data was not pushed to {remote}: {fix}"))


def _commit(root: Path) -> bool:
    """Commit exactly what init wrote; a failure (a hook, signing) only leaves it uncommitted."""
    names = [".gitignore", ".dvcignore", ".dvc", "configs", *_TEMPLATES.values()]
    names += ["data/.gitignore", f"data/{DATA_NAME}.dvc"]
    paths = [name for name in dict.fromkeys(names) if (root / name).exists()]
    try:
        _git(root, "add", "--", *paths)
        _git(root, "commit", "-q", "-m", COMMIT_MESSAGE, "--", *paths)
    except DvcError as exc:
        from rich.markup import escape

        warn(escape(f"{exc.message}; the project is ready but not committed: commit it yourself"))
        return False
    return True


# The training knobs the pipeline's params.yaml exposes; their values come from the packaged
# defaults at init time, so the file always starts equal to what `cmi train` would use.
PIPELINE_PARAMS = (
    "seed",
    "trainer.max_epochs",
    "optim.lr",
    "loss.dice_weight",
    "data.image_size",
    "data.batch_size",
)


def pipeline_params_yaml() -> str:
    """Return the body of ``params.yaml``: the model choice and the default training knobs."""
    import yaml
    from omegaconf import OmegaConf

    from cmi_cli.config import compose_train_config

    cfg = compose_train_config([], project_root=Path(__file__).parent)
    params: dict[str, object] = {"model": str(cfg.model.name)}
    for dotted in PIPELINE_PARAMS:
        node: dict[str, object] = params
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[leaf] = OmegaConf.select(cfg, dotted)
    return yaml.safe_dump(params, sort_keys=False)
