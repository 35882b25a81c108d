"""Packaging glue that pyproject.toml cannot express: ship top-level ``configs/`` in the wheel.

The Hydra config tree lives at the repository's top level (where users and docs expect it) and
is installed as the package ``cmi_cli.configs``, so ``pip install cmi-cli`` works outside the repo.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["cmi_cli", "cmi_cli.*"]), "cmi_cli.configs"],
    package_dir={"cmi_cli.configs": "configs"},
    package_data={
        "cmi_cli": ["py.typed", "resources/*", "resources/**/*", "serving/static/*"],
        "cmi_cli.configs": ["*.yaml", "**/*.yaml"],
    },
)
