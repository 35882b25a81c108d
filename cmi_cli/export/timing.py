"""Honest latency measurement: warm-up, repeats, medians, and the runtime settings that matter.

Eager PyTorch on CPU is sensitive to the memory allocator and the input's memory layout, so
every measurement records both (:func:`torch_runtime`), and the torch path uses channels_last,
which ran about 2.5x faster than contiguous NCHW for our networks.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0..100) of ``values`` with linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_ms(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> float:
    """Return the median wall time of ``fn`` in milliseconds."""
    return statistics.median(time_calls(fn, repeats, warmup)) * 1000


def allocator() -> str:
    """Name the malloc in use: jemalloc or tcmalloc when preloaded, else glibc's."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return name
    return "glibc malloc"


def torch_runtime() -> dict[str, Any]:
    """Return the torch CPU settings that change eager speed: threads, oneDNN, allocator."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "allocator": allocator(),
    }


def torch_forward(
    model: Any, channels_last: bool = True, compile: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """Return a numpy-in, numpy-out eager (or compiled) forward with the fastest honest layout.

    The model is moved to channels_last once and each input is converted on the way in, so
    the conversion cost is part of every measured call. The torch serving backend and
    ``cmi benchmark`` share this.

    Args:
        model: A model in eval mode (it is put in eval mode and converted in place).
        channels_last: Use the channels_last memory format (faster with oneDNN on x86).
        compile: Wrap the model with ``torch.compile`` (Inductor); the first calls compile.
    """
    import torch

    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    net = torch.compile(model) if compile else model

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=fmt)
            return net(x).contiguous().numpy()

    return forward


def torch_latencies_ms(
    models: list[Any],
    size: int,
    batch: int = 1,
    repeats: int = 10,
    warmup: int = 2,
    layouts: list[bool] | None = None,
) -> list[float]:
    """Median eager latency (ms per call) of each model, timed in interleaved rounds.

    Taking turns call by call means a burst of load on a shared machine slows every model
    alike, so the ratios stay honest even when the absolute numbers do not. ``layouts`` gives
    channels_last (True, the default) or NCHW per model.
    """
    layouts = layouts or [True] * len(models)
    forwards = [torch_forward(m, channels_last=cl) for m, cl in zip(models, layouts, strict=True)]
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for forward in forwards:
        time_calls(lambda f=forward: f(x), repeats=0, warmup=warmup)  # type: ignore[misc]
    times: list[list[float]] = [[] for _ in forwards]
    for _ in range(repeats):
        for i, forward in enumerate(forwards):
            times[i] += time_calls(lambda f=forward: f(x), repeats=1, warmup=0)  # type: ignore[misc]
    return [statistics.median(t) * 1000 for t in times]


def fastest_layout(model: Any, size: int, repeats: int = 3) -> bool:
    """Return True when channels_last beats contiguous NCHW for ``model`` at batch 1.

    oneDNN usually prefers channels_last, but narrow layers (a pruned net's 8-channel maps)
    can be faster in NCHW, so each model gets a short interleaved probe of both.
    """
    import copy

    twin = copy.deepcopy(model)
    nchw, cl = torch_latencies_ms([twin, model], size, repeats=repeats, layouts=[False, True])
    return cl <= nchw


def torch_latency_ms(model: Any, size: int, batch: int = 1, repeats: int = 10) -> float:
    """Median eager latency of ``model`` per call on a random ``[batch, 3, size, size]`` input."""
    return torch_latencies_ms([model], size, batch, repeats)[0]
