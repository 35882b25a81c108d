"""Packaged Hydra configs for ``cmi train``: ``train.yaml`` and its groups.

Installed as the package ``cmi_cli.configs``; ``cmi_cli.config`` composes them under a
project's own ``configs/`` folder, a ``--config`` file and command-line overrides.
"""
