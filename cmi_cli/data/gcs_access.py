"""Google Cloud Storage access for DVC's gs:// remotes: one clear line about credentials.

gcsfs (under dvc-gs) asks Google's gRPC control plane for each bucket's layout (hierarchical
namespace or not) every time it opens a bucket. Without credentials that fails and logs the
same "Could not determine bucket type ... falling back" warning once per file system, six
times a push; against an emulator, which serves only the JSON API, it waits 60 s on a gRPC
call that cannot succeed. So before DVC opens a gs:// remote:

- with ``STORAGE_EMULATOR_HOST`` set, or the remote's ``allow_anonymous_login``, the lookup is
  turned off (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``, unless set already) and nothing is
  said;
- without credentials it is turned off too, one line says how to provide them, and the remote
  is opened anonymously for this process. gcsfs would otherwise ask the GCE metadata server
  for a token, retrying with backoff for about a minute on a machine that has none, before
  falling back to anonymous access anyway;
- with credentials nothing changes and nothing is said.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from cmi_cli.console import warn

HNS_SWITCH = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"
CREDENTIALS_HINT = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service-account key file (or the remote's credentialpath); for an emulator set "
    "STORAGE_EMULATOR_HOST"
)
_prepared: dict[str, bool] = {}


def prepare_gcs_access(url: str, remote_config: Mapping[str, Any]) -> bool:
    """Get the process ready for DVC to open the gs:// remote at ``url``.

    The check and its message happen once per process and URL.

    Args:
        url: The remote's URL, for the message.
        remote_config: The remote's section of ``.dvc/config``.

    Returns:
        Whether the remote is to be opened anonymously (no credentials were found): the
        caller sets ``allow_anonymous_login`` on its in-memory copy of the remote's config.
    """
    if url in _prepared:
        return _prepared[url]
    quiet = bool(os.environ.get("STORAGE_EMULATOR_HOST")) or _truthy(
        remote_config.get("allow_anonymous_login")
    )
    anonymous = not quiet and not _has_credentials(remote_config)
    _prepared[url] = anonymous
    if quiet or anonymous:
        os.environ.setdefault(HNS_SWITCH, "false")
        # gcsfs already imported (in-process callers) read the switch too early: drop the
        # repeats of a warning whose cause is known.
        logging.getLogger("gcsfs").addFilter(_drop_bucket_type_warnings)
    if anonymous:
        warn(f"no Google Cloud credentials for {url}: trying anonymous access; " + CREDENTIALS_HINT)
    return anonymous


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def _has_credentials(remote_config: Mapping[str, Any]) -> bool:
    path = remote_config.get("credentialpath") or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path:
        return os.path.isfile(os.path.expanduser(str(path)))
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:  # no dvc-gs: DVC's own error names the missing plugin
        return True
    try:
        google.auth.default()
    except DefaultCredentialsError:
        return False
    except Exception:  # any other failure is the credentials' own, reported by the transfer
        return True
    return True


def _drop_bucket_type_warnings(record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not ("bucket type" in text or "storage layout" in text)
