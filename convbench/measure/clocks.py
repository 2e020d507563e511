"""Clocks for :func:`convbench.measure.timing.bench`: the host's, and CUDA events.

A kernel declares the clock its prepared call is timed on (``Kernel.clock``):
``"host"`` for work that is finished when the call returns (CPU kernels, the
GPU kernels' host emulator), ``"cuda-events"`` for work queued on the current
CUDA stream. Events bracket each timed run on the stream, so the time is the
device's, not the launch overhead's.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

CLOCKS = ("host", "cuda-events")


class Clock(Protocol):
    """What :func:`~convbench.measure.timing.bench` needs from a clock."""

    name: str

    def start(self) -> None:
        """Mark the start of a timed run."""

    def stop(self) -> float:
        """Mark its end, wait for it, return the seconds since :meth:`start`."""

    def synchronize(self) -> None:
        """Wait until all queued work has finished."""

    def flush_l2(self) -> None:
        """Evict the device's L2 cache (queued before the next run; a no-op on the host)."""


class HostClock:
    """``time.perf_counter``: for work that is done when the call returns."""

    name = "host"

    def __init__(self) -> None:
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        return time.perf_counter() - self._t0

    def synchronize(self) -> None:
        pass

    def flush_l2(self) -> None:
        pass  # no device cache to flush


class CudaEventClock:
    """A pair of CuPy events recorded on the current stream."""

    name = "cuda-events"

    def __init__(self) -> None:
        import cupy  # noqa: PLC0415 -- only built where a GPU is present

        self._cupy = cupy
        self._start = cupy.cuda.Event()
        self._stop = cupy.cuda.Event()
        self._flush: Any = None

    def start(self) -> None:
        self._start.record()

    def stop(self) -> float:
        self._stop.record()
        self._stop.synchronize()
        return self._cupy.cuda.get_elapsed_time(self._start, self._stop) / 1e3

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    def flush_l2(self) -> None:
        """Overwrite a buffer twice the size of L2, on the stream, outside the events."""
        if self._flush is None:
            props = self._cupy.cuda.runtime.getDeviceProperties(self._cupy.cuda.Device().id)
            l2 = int(props.get("l2CacheSize", 50 * 2**20))
            self._flush = self._cupy.empty(2 * l2, dtype=self._cupy.uint8)
        self._flush.fill(0)


def make_clock(name: str) -> Clock:
    """The clock called ``name`` (one of :data:`CLOCKS`)."""
    if name == "host":
        return HostClock()
    if name == "cuda-events":
        return CudaEventClock()
    raise ValueError(f"unknown clock {name!r}; expected one of {CLOCKS}")
