"""The one timing primitive, :func:`bench`, and the statistics of what it timed.

Every timed path of convbench goes through :func:`bench`: the sweep's
measurements, the roof, cuDNN's plan autotuning, the interleaved peer
comparisons and the JIT-cost probe. The rules:

* the first call is timed on its own with the host clock (it includes Numba's
  compile or cache load, NVRTC, cuFFT plans, cuDNN autotuning) and never
  counted among the timed runs;
* then a pause of at most ``cooldown`` seconds, until the process's other
  threads are idle (:func:`convbench.measure.cooldown.cool_down`), and
  ``warmup`` untimed calls, more until they add up to ``warm_time``
  seconds: the pause lets the thread pools of whatever ran before
  (OpenBLAS's, OpenMP's) go to sleep, and the warm calls bring the idle
  cores, this call's own threads, caches and pages back before the clock
  starts. On 2 cores, oneDNN timed right after a Winograd call (Numba
  transforms around OpenBLAS GEMMs) took 14-24 ms, and 0.99 ms after a
  0.15 s pause and two warm calls;
* then timed runs on the given clock until both ``min_reps`` runs and
  ``min_time`` seconds of measured time are reached (or ``max_time`` seconds
  of wall time run out, after ``min_reps`` at least), like pytest-benchmark's
  calibration; a run may be ``batch`` back-to-back calls, its time divided
  by ``batch``, for calls too short to time one by one (``min_sample`` picks
  the batch from the warm calls' times, so that a run lasts at least that
  long and a record of a microsecond call keeps hundreds of runs, not
  hundreds of thousands);
* ``flush_l2`` evicts the device cache before every run, outside the clock;
* the C heap keeps the memory it frees
  (:func:`convbench.measure.allocator.keep_freed_memory`), so a call that
  allocates is timed in the same state whatever ran before it in the process.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from convbench.measure.allocator import keep_freed_memory
from convbench.measure.clocks import Clock, HostClock
from convbench.measure.cooldown import cool_down


@dataclass
class Timing:
    """Timed runs of one prepared call.

    Attributes
    ----------
    prepare_s : float
        Time of ``kernel.prepare`` (allocation, weight transforms).
    first_call_s : float
        Time of the first call: includes JIT compilation or cache loading.
    times_s : list of float
        The timed runs, in order (seconds per call).
    """

    prepare_s: float = 0.0
    first_call_s: float = 0.0
    times_s: list[float] = field(default_factory=list)
    batch: int = 1
    #: Seconds of the pause before the warm calls (at most ``cooldown``).
    cooldown_s: float = 0.0
    #: What a ``watch`` saw of the machine during the timed runs (None without one).
    window: dict[str, float] | None = None

    @property
    def reps(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    def percentile(self, q: float) -> float:
        """Linear-interpolated percentile ``q`` in [0, 100] of the timed runs."""
        data = sorted(self.times_s)
        if len(data) == 1:
            return data[0]
        pos = (len(data) - 1) * q / 100
        lo = int(pos)
        hi = min(lo + 1, len(data) - 1)
        return data[lo] + (data[hi] - data[lo]) * (pos - lo)

    @property
    def compile_s(self) -> float:
        """First call minus a steady-state call: JIT compile or cache-load time."""
        return max(0.0, self.first_call_s - self.median_s)

    def summary(self) -> dict[str, Any]:
        """Statistics for a result record (seconds)."""
        out = {k: v for k, v in asdict(self).items() if k != "times_s"}
        out.update(reps=self.reps, median_s=self.median_s, min_s=self.min_s,
                   p10_s=self.percentile(10), p90_s=self.percentile(90),
                   compile_s=self.compile_s, times_s=list(self.times_s))
        return out


def bench(fn: Callable[[], Any], *, clock: Clock | None = None, min_reps: int = 5,
          min_time: float = 0.2, warmup: int = 1, cooldown: float = 0.0,
          max_time: float = 30.0,
          max_reps: int = 100_000, batch: int = 1, min_sample: float = 0.0,
          flush_l2: bool = False, wall: Callable[[], float] = time.perf_counter,
          watch: Any = None, warm_time: float = 0.0) -> Timing:
    """Time ``fn`` until ``min_reps`` runs and ``min_time`` seconds are reached.

    Parameters
    ----------
    fn : callable
        The prepared call; its result is ignored.
    clock : Clock, optional
        What times each run (default: the host clock).
    min_reps, min_time : int, float
        Both must be reached; ``min_time`` counts measured (clock) time.
    warmup : int
        Untimed calls after the first one (and after the cool-down).
    cooldown : float
        Longest pause after the first call, before the warm-up calls: it ends
        once the process's other threads have been idle for two 10 ms slices.
    max_time : float
        Wall-clock seconds of timed runs after which a slow call stops
        (once ``min_reps`` ran).
    max_reps : int
        Upper bound on the timed runs.
    batch : int
        Calls per timed run; the run's time is divided by it.
    min_sample : float
        If positive, the batch is chosen instead: the fewest calls whose
        time, by the median of the warm calls (at least one is made), reaches
        this many seconds.
    flush_l2 : bool
        Call ``clock.flush_l2()`` before every timed run, outside the clock.
    wall : callable
        Host clock in seconds (for the first call and ``max_time``).
    watch : object with ``start()`` and ``stop() -> dict``, optional
        Started when the timed runs start and stopped when they end; what it
        returns becomes ``Timing.window``
        (:class:`convbench.measure.disturbance.CpuWatch`: other processes'
        CPU time meanwhile).

    Returns
    -------
    Timing
    """
    if min_reps < 1:
        raise ValueError(f"min_reps must be >= 1, got {min_reps}")
    if min_time < 0:
        raise ValueError(f"min_time must be >= 0, got {min_time}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if not cooldown >= 0:
        raise ValueError(f"cooldown must be >= 0, got {cooldown}")
    if not warm_time >= 0:
        raise ValueError(f"warm_time must be >= 0, got {warm_time}")
    keep_freed_memory()
    clock = clock or HostClock()
    clock.synchronize()
    t0 = wall()
    fn()
    clock.synchronize()
    timing = Timing(first_call_s=wall() - t0)
    if cooldown:
        timing.cooldown_s = cool_down(cooldown)
    warm: list[float] = []
    least = max(warmup, 1 if min_sample > 0 else 0)
    while len(warm) < least or sum(warm) < warm_time:
        w0 = wall()
        fn()
        clock.synchronize()
        warm.append(wall() - w0)
    if min_sample > 0:
        per_call = max(statistics.median(warm), 1e-9)
        batch = max(1, math.ceil(min_sample / per_call))
    timing.batch = batch
    measured = 0.0
    if watch is not None:
        watch.start()
    started = wall()
    while True:
        if flush_l2:
            clock.flush_l2()
        clock.start()
        for _ in range(batch):
            fn()
        elapsed = clock.stop() / batch
        timing.times_s.append(elapsed)
        measured += elapsed * batch
        done = timing.reps >= min_reps and measured >= min_time
        late = timing.reps >= min_reps and wall() - started > max_time
        if done or late or timing.reps >= max_reps:
            if watch is not None:
                timing.window = watch.stop()
            return timing
