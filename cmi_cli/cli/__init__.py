"""The Typer command line: thin modules that parse options and call one domain function each.

Nothing here imports torch, lightning, onnxruntime, evidently, wandb, dvc or pandas at module
level; each command imports what it needs when it runs.

The modules loaded at start-up do not use ``from __future__ import annotations``: Typer reads
every command's signature on each run, and string annotations would make it compile and
evaluate each one again (about a sixth of `cmi --help`'s time), where real annotations are
built once, from bytecode. Names imported only for type checking are quoted instead.
"""
