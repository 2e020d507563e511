"""GPU timing: CUDA events on the current stream, warm-up, optional L2 flush.

The rules are those of CPU timing (:mod:`convbench.timing`): the first call
is timed on its own with the host clock (it includes NVRTC compilation,
cuFFT plan creation or cuDNN's autotuning) and never counted; then warm-up
calls; then timed runs until both ``min_reps`` and ``min_time`` (measured
device time) are reached. Each timed run is bracketed by two events recorded
on the current stream, so the time is the device's, not the launch
overhead's. With ``flush_l2`` a buffer twice the size of L2 is overwritten
before every timed run, outside the events, so each run starts with a cold
cache. Host-device transfers happen in ``prepare`` and never here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from convbench.timing import Timing


class DeviceClock(Protocol):
    """What :func:`time_device_call` needs from the device."""

    def start(self) -> None:
        """Record the start event on the current stream."""

    def stop(self) -> float:
        """Record the stop event, wait for it, return seconds since :meth:`start`."""

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work."""

    def flush_l2(self) -> None:
        """Evict the L2 cache (queued on the current stream)."""


class CudaEventClock:
    """:class:`DeviceClock` with CuPy events on the current stream."""

    name = "cuda-events"

    def __init__(self) -> None:
        import cupy  # noqa: PLC0415 -- only built when a GPU is present

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
        if self._flush is None:
            props = self._cupy.cuda.runtime.getDeviceProperties(self._cupy.cuda.Device().id)
            l2 = int(props.get("l2CacheSize", 50 * 2**20))
            self._flush = self._cupy.empty(2 * l2, dtype=self._cupy.uint8)
        self._flush.fill(0)


class HostClock:
    """:class:`DeviceClock` for work that runs synchronously on the host (the emulator)."""

    name = "host-perf-counter"

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


def time_device_call(fn: Callable[[], Any], clock: DeviceClock, *, min_reps: int = 5,
                     min_time: float = 0.2, warmup: int = 3, max_time: float = 30.0,
                     max_reps: int = 100_000, flush_l2: bool = False,
                     host_timer: Callable[[], float] = time.perf_counter) -> Timing:
    """Time ``fn`` on the device until ``min_reps`` runs and ``min_time`` seconds.

    ``max_time`` bounds the wall-clock time of the timed loop (after
    ``min_reps`` runs at least).
    """
    if min_reps < 1:
        raise ValueError(f"min_reps must be >= 1, got {min_reps}")
    if min_time < 0:
        raise ValueError(f"min_time must be >= 0, got {min_time}")
    clock.synchronize()
    t0 = host_timer()
    fn()
    clock.synchronize()
    timing = Timing(first_call_s=host_timer() - t0)
    for _ in range(warmup):
        fn()
    clock.synchronize()
    device_total = 0.0
    started = host_timer()
    while True:
        if flush_l2:
            clock.flush_l2()
        clock.start()
        fn()
        elapsed = clock.stop()
        timing.times_s.append(elapsed)
        device_total += elapsed
        wall = host_timer() - started
        if ((timing.reps >= min_reps and device_total >= min_time) or timing.reps >= max_reps
                or (timing.reps >= min_reps and wall > max_time)):
            return timing
