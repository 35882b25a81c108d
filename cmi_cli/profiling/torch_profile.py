"""Profile training or inference steps with ``torch.profiler``: traces and the top operators.

A run skips one step, warms up for one, then records ``steps`` steps with shapes and memory.
It writes into the output folder:

* ``trace.json``: a Chrome trace (open it in https://ui.perfetto.dev or chrome://tracing);
* ``tensorboard/``: the same trace for TensorBoard's profiler plugin;
* ``top_ops.txt`` and ``top_ops.json``: the operators with the most self CPU time.

Model code shows up under named ranges (``train_step``, ``model_forward``, ``backward``) so the
operators in a trace can be traced back to the step that ran them.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from cmi_cli.utils.files import atomic_path, atomic_write_text

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

DEFAULT_TOP = 15
WAIT_STEPS, WARMUP_STEPS = 1, 1


def default_profile_dir(target: str, base: Path = Path("profiles")) -> Path:
    """Return ``profiles/<target>-<timestamp>/``, a fresh folder name for one run."""
    return base / f"{target}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class OpStats:
    """Totals of one operator over the recorded steps (times in microseconds).

    Attributes:
        name: The operator or range (``aten::convolution``, ``model_forward``).
        calls: How often it ran.
        self_cpu_us: CPU time in the operator itself, children excluded.
        cpu_total_us: CPU time including children.
        self_cpu_share: ``self_cpu_us`` as a share of all self CPU time.
        self_cpu_memory: Bytes allocated minus freed by the operator itself on the CPU.
        input_shapes: Input shapes of its costliest call signature.
        self_cuda_us: Device time in the operator itself (``None`` without CUDA).
        cuda_total_us: Device time including children (``None`` without CUDA).
    """

    name: str
    calls: int
    self_cpu_us: float
    cpu_total_us: float
    self_cpu_share: float
    self_cpu_memory: int
    input_shapes: str
    self_cuda_us: float | None = None
    cuda_total_us: float | None = None


@dataclass
class TorchProfile:
    """What a profiler run recorded and where it wrote it.

    Attributes:
        target: ``train`` or ``inference``.
        out_dir: The output folder.
        steps: Steps recorded (after the wait and warm-up steps).
        device: ``cpu`` or ``cuda``.
        batch_shape: Shape of the input batch.
        ops: The top operators by self CPU time.
        trace: The Chrome/Perfetto trace.
        tensorboard_dir: The folder TensorBoard reads.
        table: The top operators as text.
        seconds: Wall time of the recorded steps.
    """

    target: str
    out_dir: Path
    steps: int
    device: str
    batch_shape: list[int]
    ops: list[OpStats] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def trace(self) -> Path:
        """The Chrome/Perfetto trace."""
        return self.out_dir / "trace.json"

    @property
    def tensorboard_dir(self) -> Path:
        """The folder TensorBoard's profiler plugin reads."""
        return self.out_dir / "tensorboard"

    @property
    def table(self) -> Path:
        """The top-operator table as text."""
        return self.out_dir / "top_ops.txt"


@contextmanager
def recorded(
    target: str, steps: int, out_dir: Path, cuda: bool
) -> Iterator[torch.profiler.profile]:
    """Run the block under ``torch.profiler`` with the wait/warm-up/active schedule.

    The block must call ``prof.step()`` after each step; the trace files are written when the
    active steps end.
    """
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    tb_dir = out_dir / "tensorboard"
    tb_dir.mkdir(parents=True, exist_ok=True)
    to_tensorboard = tensorboard_trace_handler(str(tb_dir), worker_name=target)

    def on_trace_ready(prof: torch.profiler.profile) -> None:
        # A run's trace can be saved only once: TensorBoard's handler saves it, and the
        # Chrome/Perfetto copy is that same file.
        to_tensorboard(prof)
        written = max(tb_dir.glob(f"{target}.*.pt.trace.json"), key=lambda p: p.stat().st_mtime)
        with atomic_path(out_dir / "trace.json") as tmp:
            shutil.copyfile(written, tmp)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(
        activities=activities,
        schedule=schedule(wait=WAIT_STEPS, warmup=WARMUP_STEPS, active=steps, repeat=1),
        on_trace_ready=on_trace_ready,
        record_shapes=True,
        profile_memory=True,
        with_stack=False,
    ) as prof:
        yield prof


def top_operators(
    prof: torch.profiler.profile, cuda: bool, top: int = DEFAULT_TOP
) -> list[OpStats]:
    """Return the ``top`` operators of a finished run by self CPU time."""
    averages = list(prof.key_averages())
    total = sum(a.self_cpu_time_total for a in averages) or 1.0
    shapes: dict[str, tuple[float, str]] = {}
    for avg in prof.key_averages(group_by_input_shape=True):
        cost = avg.self_cpu_time_total
        if avg.key not in shapes or cost > shapes[avg.key][0]:
            shapes[avg.key] = (cost, _shapes_text(avg.input_shapes))
    rows = sorted(averages, key=lambda a: a.self_cpu_time_total, reverse=True)[:top]
    return [
        OpStats(
            name=str(a.key),
            calls=int(a.count),
            self_cpu_us=float(a.self_cpu_time_total),
            cpu_total_us=float(a.cpu_time_total),
            self_cpu_share=float(a.self_cpu_time_total) / total,
            self_cpu_memory=int(a.self_cpu_memory_usage),
            input_shapes=shapes.get(str(a.key), (0.0, ""))[1],
            self_cuda_us=float(a.self_device_time_total) if cuda else None,
            cuda_total_us=float(a.device_time_total) if cuda else None,
        )
        for a in rows
    ]


def _shapes_text(shapes: Any, limit: int = 60) -> str:
    present = [list(s) for s in shapes or [] if s]
    text = ", ".join(str(s) for s in present)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def finish_profile(profile: TorchProfile, prof: torch.profiler.profile, cuda: bool) -> None:
    """Fill in the top operators and write ``top_ops.txt`` and ``top_ops.json``."""
    profile.ops = top_operators(prof, cuda)
    buffer = io.StringIO()
    render_top_ops(profile, Console(file=buffer, width=200, color_system=None))
    atomic_write_text(profile.table, buffer.getvalue())
    record = {**asdict(profile), "out_dir": str(profile.out_dir)}
    atomic_write_text(profile.out_dir / "top_ops.json", json.dumps(record, indent=2))


def render_top_ops(profile: TorchProfile, console: Console) -> None:
    """Print the top operators of a run as a table."""
    cuda = any(op.self_cuda_us is not None for op in profile.ops)
    table = Table(
        title=f"top {len(profile.ops)} operators by self CPU time: {profile.target}, "
        f"{profile.steps} steps on {profile.device}, batch {profile.batch_shape}"
    )
    table.add_column("operator", overflow="fold")
    table.add_column("calls", justify="right")
    table.add_column("self CPU ms", justify="right")
    table.add_column("self CPU %", justify="right")
    table.add_column("CPU total ms", justify="right")
    if cuda:
        table.add_column("self CUDA ms", justify="right")
        table.add_column("CUDA total ms", justify="right")
    table.add_column("self CPU mem", justify="right")
    table.add_column("input shapes", overflow="fold")
    for op in profile.ops:
        cells = [op.name, str(op.calls), _ms(op.self_cpu_us)]
        cells += [f"{100 * op.self_cpu_share:.1f}", _ms(op.cpu_total_us)]
        if cuda:
            cells += [_ms(op.self_cuda_us), _ms(op.cuda_total_us)]
        cells += [_bytes(op.self_cpu_memory), op.input_shapes]
        table.add_row(*cells)
    console.print(table)


def _ms(us: float | None) -> str:
    return "" if us is None else f"{us / 1000:.2f}"


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def named_forward(net: torch.nn.Module, name: str = "model_forward") -> Callable[[], None]:
    """Wrap every forward of ``net`` in a profiler range; return a function removing it."""
    from torch.profiler import record_function

    open_ranges: list[Any] = []

    def enter(module: Any, args: Any) -> None:
        rf = record_function(name)
        rf.__enter__()
        open_ranges.append(rf)

    def leave(module: Any, args: Any, output: Any) -> None:
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    handles = [net.register_forward_pre_hook(enter), net.register_forward_hook(leave)]

    def remove() -> None:
        for h in handles:
            h.remove()

    return remove


def step_callback(prof: torch.profiler.profile, cuda: bool) -> Any:
    """Return a Lightning callback that names each step's ranges and advances the profiler.

    Its ``step_ends`` lists the time each step ended.
    """
    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.profiler import record_function

    class StepProfiler(Callback):
        def __init__(self) -> None:
            self.step_ends: list[float] = []
            self._open: dict[str, Any] = {}

        def _enter(self, name: str) -> None:
            self._open[name] = record_function(name)
            self._open[name].__enter__()

        def _leave(self, name: str) -> None:
            if name in self._open:
                self._open.pop(name).__exit__(None, None, None)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, i: int) -> None:
            self._enter("train_step")

        def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
            self._enter("backward")

        def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
            self._leave("backward")

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, i: int
        ) -> None:
            self._leave("train_step")
            if cuda:
                torch.cuda.synchronize()
            self.step_ends.append(time.perf_counter())
            prof.step()

    return StepProfiler()


def profile_training(
    cfg: DictConfig, project_root: Path, steps: int = 5, out_dir: Path | None = None
) -> TorchProfile:
    """Profile ``steps`` training steps of the model and data a train config describes.

    The steps run through Lightning, as ``cmi train`` runs them (data loading, forward, loss,
    backward and the optimiser step), on CUDA when there is one and the config allows it.

    Args:
        cfg: A composed train config (``compose_train_config``).
        project_root: Folder the config's relative paths are resolved against.
        steps: Steps to record.
        out_dir: Output folder (default: ``profiles/train-<timestamp>``).

    Returns:
        The profile, with the top operators.

    Raises:
        ConfigError, DataError: As training would for a bad config or dataset.
    """
    import lightning as L
    import torch

    from cmi_cli.training.train import build_data, build_module

    out = Path(out_dir) if out_dir is not None else default_profile_dir("train")
    cuda = torch.cuda.is_available() and str(cfg.trainer.get("accelerator", "auto")) != "cpu"
    dm = build_data(cfg, project_root)
    module = build_module(cfg, dm, project_root)
    batch = [dm.cfg.batch_size, 3, dm.cfg.image_size, dm.cfg.image_size]
    profile = TorchProfile("train", out, steps, "cuda" if cuda else "cpu", batch)
    remove = named_forward(module.net)
    try:
        from cmi_cli.training.train import quiet_lightning

        with quiet_lightning(), recorded("train", steps, out, cuda) as prof:
            callback = step_callback(prof, cuda)
            trainer = L.Trainer(
                accelerator="cuda" if cuda else "cpu",
                devices=1,
                precision=cfg.trainer.get("precision", "32-true") if cuda else "32-true",
                max_steps=WAIT_STEPS + WARMUP_STEPS + steps,
                max_epochs=-1,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=str(out),
                callbacks=[callback],
            )
            trainer.fit(module, datamodule=dm)
        ends = callback.step_ends
        profile.seconds = ends[-1] - ends[WAIT_STEPS + WARMUP_STEPS - 1] if len(ends) > 2 else 0.0
    finally:
        remove()
    finish_profile(profile, prof, cuda)
    return profile


def profile_inference(
    cfg: DictConfig | None = None,
    checkpoint: Path | None = None,
    steps: int = 5,
    out_dir: Path | None = None,
    batch_size: int | None = None,
) -> TorchProfile:
    """Profile ``steps`` forward passes of a trained checkpoint or of a config's model.

    Inputs are random normalised images: a dense network's speed does not depend on pixel
    values, and the data pipeline has its own target (``cmi profile --target data``). The
    model runs in eval mode under ``torch.inference_mode`` and channels_last, as
    ``cmi benchmark`` runs it.

    Args:
        cfg: A composed train config (its model, untrained); ignored with ``checkpoint``.
        checkpoint: A checkpoint from ``cmi train``.
        steps: Forward passes to record.
        out_dir: Output folder (default: ``profiles/inference-<timestamp>``).
        batch_size: Images per pass (default: the config's ``data.batch_size``).

    Raises:
        ArtifactError: If the checkpoint cannot be loaded.
        ValueError: If neither a config nor a checkpoint is given.
    """
    import torch
    from torch.profiler import record_function

    if checkpoint is not None:
        from cmi_cli.training.checkpoint import load_model

        model, lineage = load_model(checkpoint)
        size = int(lineage["preprocessing"]["image_size"])
        default_batch = int(lineage.get("config", {}).get("data", {}).get("batch_size", 8))
    elif cfg is not None:
        from omegaconf import OmegaConf

        from cmi_cli.models.registry import build_model, params_from_config

        name, params = params_from_config(OmegaConf.to_container(cfg.model, resolve=True))  # type: ignore[arg-type]
        model = build_model(name, int(cfg.data.num_classes), **params).eval()
        size, default_batch = int(cfg.data.image_size), int(cfg.data.batch_size)
    else:
        raise ValueError("profile_inference needs a config or a checkpoint")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batch = [batch_size or default_batch, 3, size, size]
    out = Path(out_dir) if out_dir is not None else default_profile_dir("inference")
    profile = TorchProfile("inference", out, steps, device.type, batch)
    model = model.to(device, memory_format=torch.channels_last)
    inputs = torch.randn(*batch, generator=torch.Generator().manual_seed(0)).to(
        device, memory_format=torch.channels_last
    )
    start = time.perf_counter()
    with torch.inference_mode(), recorded("inference", steps, out, cuda) as prof:
        for step in range(WAIT_STEPS + WARMUP_STEPS + steps):
            if step == WAIT_STEPS + WARMUP_STEPS:
                start = time.perf_counter()
            with record_function("model_forward"):
                model(inputs)
            if cuda:
                torch.cuda.synchronize()
            prof.step()
        profile.seconds = time.perf_counter() - start
    finish_profile(profile, prof, cuda)
    return profile
