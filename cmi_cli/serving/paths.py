"""Server paths shown to clients as names relative to the model's folder.

The functions live in :mod:`cmi_cli.utils.relpaths`, below monitoring, which needs them too.
"""

from cmi_cli.utils.relpaths import relative_name, relative_paths

__all__ = ["relative_name", "relative_paths"]
