"""Hyperparameter sweeps from one W&B-format spec, run by Optuna (default) or W&B.

``spec`` reads and checks the spec; ``trial`` turns values into a ``cmi train`` run;
``optuna_backend`` and ``wandb_backend`` are the engines; ``report`` and ``finish`` write the
trials table, the best override file and the plots.
"""
