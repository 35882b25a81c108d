"""The Typer command line: thin modules that parse options and call one domain function each.

Nothing here imports torch, lightning, onnxruntime, evidently, wandb, dvc or pandas at module
level; each command imports what it needs when it runs.
"""
