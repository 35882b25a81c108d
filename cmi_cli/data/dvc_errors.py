"""Name a project's DVC remote and turn DVC's failures into one line saying what to run.

Nothing here imports DVC at module level; ``repo`` arguments are :class:`dvc.repo.Repo` objects.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

from cmi_cli.errors import DvcError

GCP_EXTRA_HINT = "install the GCS plugin: pip install 'cmi-cli[gcp]'"
NO_REMOTE_HINT = "run `dvc remote add -d NAME URL` (or, for a new project, `cmi init --remote URL`)"
_AUTH_WORDS = (
    "credential",
    "unauthorized",
    "forbidden",
    "refresherror",
    "permission",
    " 401",
    " 403",
)


@dataclass(frozen=True)
class RemoteInfo:
    """A configured DVC remote.

    Attributes:
        name: The remote's name in ``.dvc/config``.
        url: Its URL as DVC resolved it (absolute for a local folder).
        local_path: The folder for a local remote, ``None`` for a cloud one.
    """

    name: str
    url: str
    local_path: Path | None

    @property
    def scheme(self) -> str:
        """The URL scheme (``gs``, ``s3``, ...), or ``local`` for a folder."""
        return "local" if self.local_path is not None else urlparse(self.url).scheme


def local_path_of(url: str) -> Path | None:
    """Return the folder a remote URL names, or ``None`` for a cloud URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(parsed.path)
    # One letter is a Windows drive (C:\...), not a scheme.
    return Path(url) if len(parsed.scheme) <= 1 else None


def resolve_remote(repo: Any, remote: str | None) -> RemoteInfo:
    """Return the named remote, or the project's default one.

    Reads ``.dvc/config`` only, so a cloud remote resolves even when its DVC plugin is missing.
    A gs:// remote gets its credentials checked once (see :mod:`cmi_cli.data.gcs_access`).

    Raises:
        DvcError: If no remote is named and none is the default, or the name is unknown.
    """
    remotes: dict[str, Any] = dict(repo.config.get("remote", {}))
    name = remote or repo.config.get("core", {}).get("remote")
    if not name:
        raise DvcError(f"no DVC remote is configured for {repo.root_dir}", hint=NO_REMOTE_HINT)
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise DvcError(
            f"unknown DVC remote '{name}' (configured: {known})",
            hint=f"add it with `dvc remote add {name} URL` or pass one of the configured names",
        )
    url = str(remotes[name].get("url", ""))
    if urlparse(url).scheme == "gs":
        from cmi_cli.data.gcs_access import prepare_gcs_access

        if prepare_gcs_access(url, remotes[name]):
            _override_config(repo, {"remote": {name: {"allow_anonymous_login": True}}})
    return RemoteInfo(name, url, local_path_of(url))


def _override_config(repo: Any, override: dict[str, Any]) -> None:
    """Apply ``override`` to this process's view of the repository's config.

    ``.dvc/config`` stays as the user wrote it. The override is what ``Repo(config=...)``
    would have been given: DVC reloads its config when it takes the repository's lock, and
    only that argument survives the reload, so it is extended and the loaded copy dropped.
    """
    from dvc.config import merge

    current = dict(getattr(repo, "_config", None) or {})
    merge(current, override)
    repo._config = current
    repo.__dict__.pop("config", None)


def _causes(exc: BaseException, records: list[logging.LogRecord]) -> Iterator[BaseException]:
    """Yield ``exc``, its chained causes, and the exceptions DVC logged instead of raising."""
    seen: set[int] = set()
    starts: list[BaseException | None] = [exc]
    starts += [r.exc_info[1] for r in records if r.exc_info and r.exc_info[1] is not None]
    for start in starts:
        current = start
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            yield current
            current = current.__cause__ or current.__context__


def _is_auth(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in _AUTH_WORDS)


def _auth_hint(info: RemoteInfo) -> str:
    if info.scheme == "gs":
        return (
            "run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service-account key) and check that the account can read and write the bucket"
        )
    return f"check the credentials for remote '{info.name}' (`dvc remote modify --local ...`)"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def raise_translated(
    exc: Exception, info: RemoteInfo, records: list[logging.LogRecord], action: str
) -> NoReturn:
    """Raise a :class:`DvcError` explaining why a DVC ``action`` with remote ``info`` failed.

    Args:
        exc: What DVC raised.
        info: The remote the action used.
        records: The log records DVC wrote during the action (they hold swallowed errors).
        action: ``push``, ``pull`` or ``status``, for the message.

    Raises:
        DvcError: Always; exceptions that are not DVC's or the remote's are re-raised as they are.
    """
    from dvc.config import NoRemoteError, RemoteNotFoundError
    from dvc.exceptions import CheckoutError, DownloadError, DvcException, UploadError

    where = f"remote '{info.name}' ({info.url})"
    if isinstance(exc, DvcError):
        raise exc
    causes = list(_causes(exc, records))
    for cause in causes:
        missing = re.search(r"requires '(dvc-[a-z0-9]+)'", str(cause))
        if isinstance(cause, ImportError) and missing:
            hint = GCP_EXTRA_HINT if info.scheme == "gs" else f"pip install {missing.group(1)}"
            raise DvcError(f"{where} needs the {missing.group(1)} plugin", hint=hint) from exc
    if isinstance(exc, NoRemoteError):
        raise DvcError("no DVC remote is configured", hint=NO_REMOTE_HINT) from exc
    if isinstance(exc, RemoteNotFoundError):
        message = _first_line(exc).removeprefix("config file error: ")
        raise DvcError(message, hint=NO_REMOTE_HINT) from exc
    if auth := next((c for c in causes if _is_auth(c)), None):
        message = f"{where} refused access: {_first_line(auth)}"
        raise DvcError(message, hint=_auth_hint(info)) from exc
    connect = [r for r in records if "failed to connect" in r.getMessage()]
    network = next((c for c in causes[1:] if isinstance(c, (ConnectionError, TimeoutError))), None)
    if connect or network or isinstance(exc, (ConnectionError, TimeoutError)):
        reason = _first_line(network or exc)
        raise DvcError(
            f"cannot reach {where}: {reason}",
            hint="check the URL (`dvc remote list`), your network and credentials",
        ) from exc
    if isinstance(exc, DownloadError):
        raise DvcError(
            f"{exc.amount} files are missing from {where}",
            hint="run `cmi data push` where the data was added, then pull again",
        ) from exc
    if isinstance(exc, CheckoutError):
        targets = ", ".join(str(t) for t in exc.target_infos)
        raise DvcError(
            f"could not check out {targets}: files are in neither the cache nor {where}",
            hint="run `cmi data push` where the data was added, then pull again",
        ) from exc
    if isinstance(exc, UploadError):
        reasons = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
        detail = f": {reasons[0]}" if reasons else ""
        raise DvcError(
            f"{exc.amount} files failed to upload to {where}{detail}",
            hint="check that the remote is writable and has space, then run `cmi data push` again",
        ) from exc
    if isinstance(exc, (DvcException, OSError)):
        raise DvcError(
            f"dvc {action} with {where} failed: {_first_line(exc)}",
            hint="rerun with --verbose for DVC's log",
        ) from exc
    raise exc
