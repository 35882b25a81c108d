"""Entry point of the ``cmi`` executable and of ``python -m cmi_cli``."""

from __future__ import annotations


def main() -> None:
    """Run the ``cmi`` command line."""
    from cmi_cli.cli.app import app

    app(prog_name="cmi")


if __name__ == "__main__":
    main()
