"""This CPU's measured peaks, one per number format, so each format is compared with its own.

A format's share of peak only means something against the rate the same kind of arithmetic
reaches here: fp32 rows against an fp32 GEMM, int8 rows against a u8s8 int8 GEMM
(``MatMulInteger``, the kernel family ONNX Runtime's quantized convolutions use), both run
through ONNX Runtime with the thread count the benchmark uses (and the fp32 one also through
torch, whose eager rows use its own GEMM). Each kernel is timed call by call in interleaved
rounds, so a burst of load on a shared machine hits every kernel alike, and each sample repeats
its GEMM for at least :data:`MIN_SAMPLE_S` so that it meets the load as a format's call does;
the peak is the median round of the best matrix size, and the spread of those rounds is
reported with it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from cmi_cli.export.timing import time_calls

SIZES = (512, 1024)
ROUNDS = 9
MIN_SAMPLE_S = 0.2


@dataclass
class Peak:
    """A measured peak: the median round and the spread of all rounds.

    Attributes:
        precision: ``fp32`` or ``int8``.
        gops: Median rate of the best kernel and size, in 10^9 multiply-adds x 2 per second.
        low: Slowest round of that kernel and size.
        high: Fastest round of that kernel and size.
        rounds: Number of timed rounds.
        kernel: What was timed (runtime, operator, size, threads).
        samples: Every round's rate of that kernel and size.
    """

    precision: str
    gops: float
    low: float
    high: float
    rounds: int
    kernel: str
    samples: list[float] = field(default_factory=list)

    @property
    def spread_pct(self) -> float:
        """The spread of the rounds, (fastest - slowest) / median, in percent."""
        return 100 * (self.high - self.low) / self.gops if self.gops else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record with rounded numbers."""
        record = asdict(self)
        record.update(
            gops=round(self.gops, 2),
            low=round(self.low, 2),
            high=round(self.high, 2),
            spread_pct=round(self.spread_pct, 1),
            samples=[round(s, 2) for s in self.samples],
        )
        return record

    def describe(self) -> str:
        """``12.3 GOP/s (11.9-12.6, spread 5.7%, median of 9 rounds; ORT MatMul n=1024)``."""
        return (
            f"{self.gops:.1f} GOP/s ({self.low:.1f}-{self.high:.1f}, spread "
            f"{self.spread_pct:.1f}%, median of {self.rounds} rounds; {self.kernel})"
        )


def gemm_model(n: int, precision: str) -> bytes:
    """Return an ONNX model multiplying an ``n x n`` input by an ``n x n`` constant.

    Args:
        n: The matrix size.
        precision: ``fp32`` (``MatMul``) or ``int8`` (``MatMulInteger``, uint8 activations
            times int8 weights with zero points, int32 accumulation: u8s8).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision == "fp32":
        weight = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W")
        node = helper.make_node("MatMul", ["A", "W"], ["Y"])
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])]
        output = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])
        inits = [weight]
    elif precision == "int8":
        weight = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "W")
        a_zero = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero")
        w_zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zero")
        node = helper.make_node("MatMulInteger", ["A", "W", "a_zero", "w_zero"], ["Y"])
        inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])]
        output = helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])
        inits = [weight, a_zero, w_zero]
    else:
        raise ValueError(f"unknown precision {precision!r}")
    graph = helper.make_graph([node], f"gemm_{precision}_{n}", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _ort_gemm(n: int, precision: str, threads: int | None) -> Callable[[], Any]:
    import onnxruntime as ort

    from cmi_cli.export.ort_predict import session_options

    session = ort.InferenceSession(
        gemm_model(n, precision),
        sess_options=session_options(threads),
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(1)
    a: np.ndarray
    if precision == "fp32":
        a = rng.standard_normal((n, n)).astype(np.float32)
    else:
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return lambda: session.run(None, {"A": a})


def _torch_gemm(n: int) -> Callable[[], Any]:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return lambda: torch.mm(a, b)


class Kernel(NamedTuple):
    """One timed GEMM: its precision, what runs it, the matrix size, and calls per sample."""

    precision: str
    what: str
    n: int
    calls: int = 1


def _calls_for(fn: Callable[[], Any], min_sample_s: float) -> int:
    """How many calls make one sample last ``min_sample_s``.

    A peak sample as long as a format's call meets the machine's load the way that call
    does: on a busy machine a few-millisecond GEMM is either lucky (a whole time slice) or
    waits for one, and its median says little about what a long call gets.
    """
    seconds = min(time_calls(fn, repeats=2, warmup=0))
    return max(1, math.ceil(min_sample_s / max(seconds, 1e-6)))


def _repeated(fn: Callable[[], Any], calls: int) -> Callable[[], Any]:
    def run() -> None:
        for _ in range(calls):
            fn()

    return run


def gemm_kernels(
    threads: int | None = None,
    sizes: Sequence[int] = SIZES,
    with_torch: bool = True,
    min_sample_s: float = MIN_SAMPLE_S,
) -> dict[Kernel, Callable[[], Any]]:
    """Return the GEMM samples whose rates are the peaks, each warmed up once.

    Args:
        threads: ONNX Runtime intra-op threads, as the benchmarked sessions use (None: ORT's
            default); torch runs with its current thread count.
        sizes: Matrix sizes to try; the best median counts.
        with_torch: Also time ``torch.mm`` for the fp32 peak (eager rows use it).
        min_sample_s: Each sample repeats its GEMM to last at least this long.
    """
    single: dict[tuple[str, str, int], Callable[[], Any]] = {}
    for n in sizes:
        single["fp32", "ONNX Runtime MatMul", n] = _ort_gemm(n, "fp32", threads)
        single["int8", "ONNX Runtime MatMulInteger u8s8", n] = _ort_gemm(n, "int8", threads)
        if with_torch:
            single["fp32", "torch.mm", n] = _torch_gemm(n)
    kernels: dict[Kernel, Callable[[], Any]] = {}
    for (precision, what, n), fn in single.items():
        time_calls(fn, repeats=0, warmup=1)
        calls = _calls_for(fn, min_sample_s)
        kernels[Kernel(precision, what, n, calls)] = _repeated(fn, calls)
    return kernels


def rate(kernel: Kernel, seconds: float) -> float:
    """GOP/s of one sample of a GEMM kernel (``calls`` x 2 n^3 operations) in ``seconds``."""
    return kernel.calls * 2 * kernel.n**3 / seconds / 1e9


def peaks_from_rates(rates: dict[Kernel, list[float]], threads: int | None) -> dict[str, Peak]:
    """Turn every round's rate of every kernel into one :class:`Peak` per precision."""
    thread_note = f"{threads} threads" if threads else "ORT default threads"
    peaks: dict[str, Peak] = {}
    for precision in ("fp32", "int8"):
        mine = {k: v for k, v in rates.items() if k.precision == precision and v}
        if not mine:
            continue
        best = max(mine, key=lambda k: statistics.median(mine[k]))
        samples = mine[best]
        peaks[precision] = Peak(
            precision=precision,
            gops=statistics.median(samples),
            low=min(samples),
            high=max(samples),
            rounds=len(samples),
            kernel=f"{best.what} n={best.n} x{best.calls} per sample, {thread_note}",
            samples=samples,
        )
    return peaks


def measure_peaks(
    threads: int | None = None,
    sizes: Sequence[int] = SIZES,
    rounds: int = ROUNDS,
    with_torch: bool = True,
) -> dict[str, Peak]:
    """Measure the fp32 and int8 GEMM peaks on their own, in interleaved rounds.

    ``cmi benchmark`` times the same kernels inside its own rounds instead, so that a peak
    and the formats it is compared with meet the same load.

    Returns:
        ``{"fp32": Peak, "int8": Peak}``.
    """
    kernels = gemm_kernels(threads, sizes, with_torch)
    rates: dict[Kernel, list[float]] = {key: [] for key in kernels}
    for _ in range(rounds):
        for key, fn in kernels.items():
            rates[key].append(rate(key, time_calls(fn, repeats=1, warmup=0)[0]))
    return peaks_from_rates(rates, threads)


def precision_of(format_name: str) -> str:
    """The number format a benchmark format computes in: ``int8`` or ``fp32``."""
    return "int8" if "int8" in format_name else "fp32"
