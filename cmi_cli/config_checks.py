"""Type and range checks for the training keys of the packaged ``train.yaml`` and its groups.

Each rule is a predicate plus the words a user reads when it fails, so a bad value is reported
as "config key 'optim.lr' must be a number > 0, got -1".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cmi_cli.errors import ConfigError

_ABSENT = object()
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "onecycle", "none")
LOSSES = ("ce",)
LOGGERS = ("csv", "wandb", "none")
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

Rule = tuple[Callable[[Any], bool], str]


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_num(value: Any, low: float = 0.0, strict: bool = False) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return value > low if strict else value >= low


def _choice(*options: Any) -> Rule:
    return (lambda v: v in options), "one of " + ", ".join(str(o) for o in options)


def _int(low: int = 0) -> Rule:
    return (lambda v: _is_int(v, low)), f"an integer >= {low}"


def _num(low: float = 0.0, strict: bool = False) -> Rule:
    return (lambda v: _is_num(v, low, strict)), f"a number {'>' if strict else '>='} {low:g}"


def _nullable(rule: Rule) -> Rule:
    return (lambda v: v is None or rule[0](v)), f"null or {rule[1]}"


_FLAG: Rule = (lambda v: isinstance(v, bool)), "true or false"
_TEXT: Rule = (lambda v: isinstance(v, str) and bool(v.strip())), "a non-empty string"
# Lightning reads a float as a fraction of the batches and an int as a batch count.
_LIMIT: Rule = (
    (lambda v: v is None or _is_int(v, 1) or (isinstance(v, float) and 0 < v <= 1)),
    "null, a fraction in (0, 1] or a batch count >= 1",
)

_CHECKS: dict[str, Rule] = {
    "seed": _int(0),
    "run.name": _nullable(((lambda v: _TEXT[0](v) and "/" not in v), "a folder name")),
    "run.dir": _TEXT,
    "ckpt_path": _nullable(_TEXT),
    "optim.name": _choice(*OPTIMIZERS),
    "optim.lr": _num(0, strict=True),
    "optim.weight_decay": _num(0),
    "optim.momentum": _num(0),
    "optim.scheduler": _choice(*SCHEDULERS),
    "optim.warmup_epochs": _int(0),
    "loss.name": _choice(*LOSSES),
    "loss.dice_weight": _num(0),
    "loss.ignore_index": _int(-1),
    "loss.class_weights": _nullable(
        ((lambda v: isinstance(v, list) and all(_is_num(w, 0, True) for w in v)), "numbers > 0")
    ),
    "compile": _FLAG,
    "early_stopping.monitor": _TEXT,
    "early_stopping.mode": _choice("min", "max"),
    "early_stopping.patience": _int(0),
    "checkpoint.monitor": _TEXT,
    "checkpoint.mode": _choice("min", "max"),
    "checkpoint.save_top_k": _int(-1),
    "checkpoint.save_last": _FLAG,
    "num_prediction_images": _int(0),
    "test_after_fit": _FLAG,
    "trainer.accelerator": _choice(*ACCELERATORS),
    "trainer.devices": (
        (lambda v: _is_int(v, 1) or v in ("auto", -1) or isinstance(v, (str, list))),
        "a count >= 1, auto, -1 or a list of device ids",
    ),
    "trainer.num_nodes": _int(1),
    "trainer.max_epochs": _int(1),
    "trainer.precision": _choice(*PRECISIONS),
    "trainer.gradient_clip_val": _nullable(_num(0)),
    "trainer.accumulate_grad_batches": _int(1),
    "trainer.log_every_n_steps": _int(1),
    "trainer.check_val_every_n_epoch": _int(1),
    "trainer.limit_train_batches": _LIMIT,
    "trainer.limit_val_batches": _LIMIT,
    "trainer.deterministic": ((lambda v: v in (True, False, "warn")), "true, false or warn"),
    "trainer.fast_dev_run": ((lambda v: _FLAG[0](v) or _is_int(v)), "true, false or a count"),
    "trainer.overfit_batches": _num(0),
    "trainer.profiler": _choice(None, "simple", "advanced", "pytorch"),
    "logger.name": _choice(*LOGGERS),
    "logger.mode": _choice(None, "online", "offline", "disabled"),
}


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def check_train_values(values: Mapping[str, Any]) -> None:
    """Check resolved config values (plain dicts and lists) against the rules.

    Keys that are absent are skipped: a group may not define them.

    Raises:
        ConfigError: On the first key with a bad value, naming the key and what it accepts.
    """
    for key, (check, expected) in _CHECKS.items():
        value = _lookup(values, key)
        if value is not _ABSENT and not check(value):
            raise ConfigError(f"config key '{key}' must be {expected}, got {value!r}")
    warmup, epochs = _lookup(values, "optim.warmup_epochs"), _lookup(values, "trainer.max_epochs")
    # A warm-up as long as the run is clamped (the last epoch always trains at full rate), so
    # shortening a run with trainer.max_epochs alone keeps working; a longer one is a mistake.
    if _is_int(warmup) and _is_int(epochs) and warmup > epochs:
        raise ConfigError(
            f"optim.warmup_epochs ({warmup}) must not exceed trainer.max_epochs ({epochs})"
        )
    weights, classes = _lookup(values, "loss.class_weights"), _lookup(values, "data.num_classes")
    if isinstance(weights, list) and _is_int(classes) and len(weights) != classes:
        raise ConfigError(
            f"loss.class_weights has {len(weights)} weights but data.num_classes is {classes}"
        )
