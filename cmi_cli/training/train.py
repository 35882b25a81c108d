"""``cmi train``: compose a config, train with Lightning, and leave a complete run folder.

The story: ``prepare_run`` (name, folder, resume point) -> ``build_data`` -> ``build_module``
(with lineage) -> ``build_trainer`` (loggers, callbacks) -> ``fit`` -> ``finish_run``
(metrics.json, predictions.png, model_card.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cmi_cli.errors import UsageError
from cmi_cli.utils.files import atomic_write_text

log = logging.getLogger(__name__)
RUN_NAME_ENV = "CMI_RUN_NAME"


@dataclass
class TrainResult:
    """What a finished training run produced."""

    run_dir: Path
    best_ckpt: Path | None
    last_ckpt: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    is_global_zero: bool = True


@dataclass
class RunPlan:
    """Where a run writes and what it resumes from."""

    name: str
    run_dir: Path
    ckpt_path: Path | None


def _latest_run(runs_dir: Path) -> str | None:
    candidates = sorted(
        (p for p in runs_dir.glob("*/checkpoints/last.ckpt")), key=lambda p: p.stat().st_mtime
    )
    return candidates[-1].parents[1].name if candidates else None


def _fresh_name(runs_dir: Path) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name, n = stamp, 1
    while (runs_dir / name).exists():
        n += 1
        name = f"{stamp}-{n}"
    return name


def prepare_run(cfg: DictConfig, project_root: Path, resume: bool) -> RunPlan:
    """Choose the run's name and folder and the checkpoint to resume from.

    Under DDP every rank re-runs the command; the name is passed to them in an environment
    variable so they all write into the same folder.
    """
    runs_dir = project_root / str(cfg.run.dir)
    want_last = resume or cfg.get("ckpt_path") == "last"
    # Only a DDP child (LOCAL_RANK set by the launcher) takes the name its parent chose; a
    # second run in the same process (sweeps, quickstart) must get a name of its own.
    inherited = os.environ.get(RUN_NAME_ENV) if os.environ.get("LOCAL_RANK") else None
    name = cfg.run.name or inherited
    if not name and want_last:
        name = _latest_run(runs_dir)
        if name is None:
            raise UsageError(
                f"nothing to resume: no run under {runs_dir} has checkpoints/last.ckpt",
                hint="Start a run first, or name it with run.name=NAME",
            )
    if not name:
        name = _fresh_name(runs_dir)
    os.environ[RUN_NAME_ENV] = str(name)
    run_dir = runs_dir / str(name)
    ckpt: Path | None = None
    if want_last:
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise UsageError(
                f"cannot resume run {name!r}: {ckpt} does not exist",
                hint="Check run.name, or start the run without --resume",
            )
    elif cfg.get("ckpt_path"):
        ckpt = Path(str(cfg.ckpt_path))
        if not ckpt.is_file():
            raise UsageError(f"ckpt_path {ckpt} does not exist", hint="Check the path")
    elif (
        (run_dir / "checkpoints").is_dir()
        and any((run_dir / "checkpoints").iterdir())
        and not os.environ.get("LOCAL_RANK")
    ):
        raise UsageError(
            f"run folder {run_dir} already holds checkpoints",
            hint="Pass --resume to continue it, or choose another run.name",
        )
    return RunPlan(name=str(name), run_dir=run_dir, ckpt_path=ckpt)


def build_data(cfg: DictConfig, project_root: Path) -> Any:
    """Build the DataModule and open the data now, so data errors come before any training."""
    from cmi_cli.data.config import DataConfig
    from cmi_cli.data.datamodule import SegmentationDataModule

    data_cfg = DataConfig.from_mapping(OmegaConf.to_container(cfg.data, resolve=True))  # type: ignore[arg-type]
    dm = SegmentationDataModule(data_cfg, project_root=project_root)
    dm.setup("fit")
    return dm


def build_module(cfg: DictConfig, dm: Any, project_root: Path, load_weights: bool = True) -> Any:
    """Build the LightningModule and attach the lineage its checkpoints will carry.

    ``load_weights``: load the pretrained encoder weights the config names (a resumed run
    takes its weights from the checkpoint instead).
    """
    from cmi_cli.data.versioning import data_version
    from cmi_cli.lineage import make_lineage
    from cmi_cli.models.complexity import count_parameters
    from cmi_cli.models.registry import check_image_size, params_from_config, zoo_record
    from cmi_cli.models.weights import load_pretrained, weights_record
    from cmi_cli.training.module import SegmentationModule

    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    name, params = params_from_config(container["model"])
    spec = {"name": name, "num_classes": dm.num_classes, "params": params}
    module = SegmentationModule(
        model_spec=spec,
        class_names=dm.class_names,
        optim=dict(container["optim"]),
        loss=dict(container["loss"]),
        max_epochs=int(cfg.trainer.max_epochs),
        compile=bool(cfg.get("compile", False)),
    )
    check_image_size(module.net, int(dm.cfg.image_size))
    weights = load_pretrained(module.net) if load_weights else weights_record(module.net)
    module.lineage = make_lineage(
        kind="checkpoint",
        class_names=dm.class_names,
        preprocessing=dm.preprocessing,
        model={
            **spec,
            **zoo_record(module.net),
            "weights": weights,
            "parameters": count_parameters(module.net),
        },
        config=container,
        data={
            "root": str(dm.cfg.root),
            # Where the data was on the training machine: lets a later step run from elsewhere.
            "path": str(dm.root),
            "dvc_md5": data_version(dm.root),
            "train_split": dm.cfg.train_split,
            "val_split": dm.val_split,
            "test_split": dm.test_split,
            # The drift reference: held-out photos the model never trained on (the test split;
            # monitoring only, never selection), else the validation split.
            "reference_split": dm.test_split if dm.test_set is not None else dm.val_split,
            "num_train": len(dm.train_set),
            "num_val": len(dm.val_set),
            # Which training pairs were held back to pick checkpoints (None: a stored split).
            "validation": carve.to_dict() if (carve := dm.validation_carve) else None,
        },
        project_root=project_root,
    )
    return module


def build_loggers(cfg: DictConfig, plan: RunPlan) -> Any:
    """Return the Lightning logger(s) the ``logger`` group selects (csv, wandb or none)."""
    from lightning.pytorch.loggers import CSVLogger

    logger_cfg = cfg.get("logger")
    name = str(logger_cfg.get("name", "none")) if logger_cfg else "none"
    if name == "none":
        return False
    if name == "csv":
        return CSVLogger(save_dir=str(plan.run_dir), name="logs", version="")
    if name == "wandb":
        from cmi_cli.training.wandb_setup import make_wandb_logger

        wandb_logger = make_wandb_logger(
            OmegaConf.to_container(logger_cfg, resolve=True),  # type: ignore[arg-type]
            plan.run_dir,
            plan.name,
        )
        # The whole composed config, not only the module's arguments, so a W&B run can be
        # reproduced from its config page.
        wandb_logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        return wandb_logger
    raise UsageError(f"unknown logger {name!r}", hint="Use logger=csv, logger=wandb or logger=none")


def build_trainer(
    cfg: DictConfig, plan: RunPlan, show_progress: bool, extra_callbacks: list[Any] | None = None
) -> Any:
    """Build Lightning's Trainer with checkpointing, early stopping, history and progress.

    ``extra_callbacks`` are appended to ours (a sweep adds its pruning callback this way).
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

    from cmi_cli.training.callbacks import HistoryCallback

    callbacks: list[Any] = [HistoryCallback(plan.run_dir)]
    ck = cfg.checkpoint
    callbacks.append(
        ModelCheckpoint(
            dirpath=plan.run_dir / "checkpoints",
            filename="best",
            monitor=ck.monitor,
            mode=ck.mode,
            save_top_k=int(ck.save_top_k),
            save_last=bool(ck.save_last),
            # After HistoryCallback has recorded the epoch, so last.ckpt holds its row.
            save_on_train_epoch_end=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
    )
    es = cfg.early_stopping
    if int(es.patience) > 0:
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=int(es.patience)))
    if show_progress:
        callbacks.append(RichProgressBar(leave=True, console_kwargs={"stderr": True}))
    callbacks.extend(extra_callbacks or [])
    kwargs: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return L.Trainer(
        **kwargs,
        default_root_dir=str(plan.run_dir),
        logger=build_loggers(cfg, plan),
        callbacks=callbacks,
        enable_progress_bar=show_progress,
        enable_model_summary=False,
    )


@contextmanager
def quiet_lightning() -> Any:
    """Keep Lightning's banner lines (accelerator, tips) and known-noise warnings off the console.

    They still reach train.log; ``--verbose`` shows everything.
    """
    import warnings

    from cmi_cli.console import is_verbose

    if is_verbose():
        yield
        return
    stream_handlers = [
        h
        for name in ("lightning.pytorch", "lightning.fabric")
        for h in logging.getLogger(name).handlers
        if type(h) is logging.StreamHandler
    ]
    levels = [h.level for h in stream_handlers]
    for h in stream_handlers:
        h.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        # Workers are a config choice (data.num_workers): 0 is right for the small sample.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        try:
            yield
        finally:
            for h, level in zip(stream_handlers, levels, strict=True):
                h.setLevel(level)


@contextmanager
def _log_to_file(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    loggers = [logging.getLogger(n) for n in ("cmi_cli", "lightning.pytorch", "lightning.fabric")]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        handler.close()


def train(
    cfg: DictConfig,
    project_root: Path | None = None,
    resume: bool = False,
    show_progress: bool = True,
    extra_callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train a model as ``cfg`` says and write the run folder.

    Args:
        cfg: The composed training config (see ``cmi_cli.config.compose_train_config``).
        project_root: Folder that relative data and run paths are resolved against.
        resume: Continue the named (or latest) run from its ``last.ckpt``.
        show_progress: Show Lightning's rich progress bar.
        extra_callbacks: Lightning callbacks added to the run's own (e.g. a sweep's pruning).

    Returns:
        The run folder, checkpoints, metrics and history.
    """
    import lightning as L

    from cmi_cli.config import config_to_yaml, validate_train_config

    project_root = Path(project_root or Path.cwd()).resolve()
    validate_train_config(cfg)
    plan = prepare_run(cfg, project_root, resume)
    if plan.ckpt_path is None:
        from cmi_cli.models.registry import params_from_config
        from cmi_cli.models.weights import check_weights_available

        # Before any data is read: a missing weights file or no network fails at once.
        check_weights_available(*params_from_config(OmegaConf.to_container(cfg.model)))  # type: ignore[arg-type]
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_data(cfg, project_root)
    module = build_module(cfg, dm, project_root, load_weights=plan.ckpt_path is None)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    with quiet_lightning(), _log_to_file(plan.run_dir / "train.log"):
        trainer = build_trainer(cfg, plan, show_progress, extra_callbacks)
        if trainer.is_global_zero:
            atomic_write_text(plan.run_dir / "config.yaml", config_to_yaml(cfg))
        log.info("run %s: %s", plan.name, "resuming" if plan.ckpt_path else "starting")
        from cmi_cli.training.finish import close_loggers, finish_run

        try:
            trainer.fit(
                module, datamodule=dm, ckpt_path=str(plan.ckpt_path) if plan.ckpt_path else None
            )
            if not trainer.is_global_zero:
                return TrainResult(plan.run_dir, None, None, is_global_zero=False)
            return finish_run(cfg, plan.run_dir, trainer, module, dm)
        finally:
            close_loggers(trainer)
