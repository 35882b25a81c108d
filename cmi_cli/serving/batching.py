"""Optional micro-batching: requests that arrive together share one model call.

A single collector thread takes the first waiting input, waits up to ``max_wait_s`` for more
(up to ``max_batch``), runs the model once on the stack and hands each caller its row. It pays
where one call on N inputs costs much less than N calls (GPUs); ``benchmarks/serve.py``
measures whether it does on CPU, which is why it is off by default.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

_STOP = object()


class MicroBatcher:
    """Group concurrent single-image inferences into batched calls.

    Args:
        run_batch: Maps a ``[N, ...]`` batch to ``[N, ...]`` outputs.
        max_batch: Largest batch.
        max_wait_s: Longest time the first input of a batch waits for company.
        on_batch: Called with each batch's size (for metrics).
    """

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run, self._max, self._wait = run_batch, max_batch, max_wait_s
        self._on_batch = on_batch
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="cmi-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: np.ndarray) -> np.ndarray:
        """Run the model on one input (blocking) and return its output row."""
        future: Future[np.ndarray] = Future()
        self._queue.put((item, future))
        return future.result()

    def close(self) -> None:
        """Finish the queued work and stop the collector thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _collect(self, first: object) -> tuple[list[tuple[np.ndarray, Future[np.ndarray]]], bool]:
        items = [first]
        deadline = time.monotonic() + self._wait
        while len(items) < self._max:
            try:
                nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if nxt is _STOP:
                return items, True  # type: ignore[return-value]
            items.append(nxt)
        return items, False  # type: ignore[return-value]

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            items, stop = self._collect(first)
            futures = [f for _, f in items]
            try:
                out = self._run(np.stack([x for x, _ in items]))
            except Exception as exc:  # handed to every caller, who reports it
                for f in futures:
                    f.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(items))
            for i, f in enumerate(futures):
                f.set_result(out[i])
