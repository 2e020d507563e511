"""CPU timing: warm-up, compile time kept apart, adaptive repetitions, statistics.

The rules (DESIGN.md, Measurement):

* the first call is timed on its own (it includes Numba's compile or
  cache load) and never counted among the timed runs;
* then at least ``warmup`` untimed calls;
* then repeat until both ``min_reps`` runs and ``min_time`` seconds are
  reached (or ``max_time`` runs out), like pytest-benchmark's calibration;
* report median, min, p10, p90 and the count; thread counts for Numba, BLAS
  and torch are pinned by :func:`pinned_threads` and recorded.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


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
        The timed runs, in order.
    """

    prepare_s: float = 0.0
    first_call_s: float = 0.0
    times_s: list[float] = field(default_factory=list)

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


def time_call(fn: Callable[[], Any], *, min_reps: int = 5, min_time: float = 0.2,
              warmup: int = 1, max_time: float = 30.0, max_reps: int = 100_000,
              sync: Callable[[], None] | None = None,
              timer: Callable[[], float] = time.perf_counter) -> Timing:
    """Time ``fn`` until ``min_reps`` runs and ``min_time`` seconds are reached.

    Parameters
    ----------
    fn : callable
        The prepared call; its result is ignored.
    min_reps, min_time : int, float
        Both must be reached (``max_time``/``max_reps`` stop a slow call
        earlier, after ``min_reps`` at least).
    warmup : int
        Untimed calls after the first one.
    sync : callable, optional
        Called after each run before reading the clock (device sync).
    timer : callable
        Clock in seconds.

    Returns
    -------
    Timing
    """
    if min_reps < 1:
        raise ValueError(f"min_reps must be >= 1, got {min_reps}")
    if min_time < 0:
        raise ValueError(f"min_time must be >= 0, got {min_time}")
    sync = sync or (lambda: None)
    t0 = timer()
    fn()
    sync()
    timing = Timing(first_call_s=timer() - t0)
    for _ in range(warmup):
        fn()
    sync()
    started = timer()
    while True:
        t0 = timer()
        fn()
        sync()
        timing.times_s.append(timer() - t0)
        elapsed = timer() - started
        enough = timing.reps >= min_reps and elapsed >= min_time
        if enough or timing.reps >= max_reps or (timing.reps >= min_reps and elapsed > max_time):
            return timing


@contextlib.contextmanager
def pinned_threads(n: int | None) -> Iterator[dict[str, Any]]:
    """Fix Numba, BLAS/OpenMP and torch thread counts to ``n`` inside the block.

    ``None`` leaves the defaults (all cores). Yields what was set, for records.
    """
    import numba  # noqa: PLC0415 -- heavy imports only when timing
    from threadpoolctl import threadpool_info, threadpool_limits  # noqa: PLC0415

    from convbench.numba_threads import active_layer, use_preferred_layer  # noqa: PLC0415

    use_preferred_layer()  # before set_num_threads starts Numba's pool

    if n is not None and n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    count = n or numba.config.NUMBA_NUM_THREADS
    old_numba = numba.get_num_threads()
    torch = _torch_if_loaded()
    old_torch = torch.get_num_threads() if torch is not None else None
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    if torch is not None:
        torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield {"threads": count, "numba_threads": numba.get_num_threads(),
                   "numba_threading_layer": active_layer(),
                   "blas": [{k: pool.get(k) for k in ("internal_api", "version",
                                                      "num_threads", "threading_layer")}
                            for pool in threadpool_info()],
                   "torch_threads": torch.get_num_threads() if torch is not None else None}
    finally:
        numba.set_num_threads(old_numba)
        if torch is not None:
            torch.set_num_threads(old_torch)


def _torch_if_loaded() -> Any:
    import sys  # noqa: PLC0415

    return sys.modules.get("torch")


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
