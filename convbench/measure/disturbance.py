"""Other processes' CPU time while a measurement runs, and when to measure again.

A kernel that runs one thread per core stalls at every barrier while another
process holds one of those cores: each of its threads waits for the one the
scheduler has descheduled, a scheduler time slice at a time. On this
project's 2-core machine an im2col call (one OpenBLAS SGEMM on two threads)
took 16 ms instead of 0.28 ms for as long as another process kept one core
busy. That is not a 2x slowdown that an interval could absorb, it is 57x, and
it lasts as long as the other process does. So every timed round watches the
machine while it runs (:class:`CpuWatch`): the CPU time that the whole machine
spent busy, minus this process's own, is other processes'; the hypervisor's
steal time is counted apart. A round that ran beside more than
:data:`FOREIGN_LIMIT_CORES` of other work, or lost more than
:data:`STEAL_LIMIT_CORES` to the hypervisor, is *disturbed*: the sweep waits for
the machine to go quiet and times it again (``SweepSettings.retries``), and a
round that is still disturbed after that makes its record ``unstable``.

The counters are Linux's ``/proc/stat`` (ticks of 10 ms) and the process's
``os.times()``. Over a round of 0.1 s the ticks make the estimate uncertain
by about 0.2 cores on a quiet machine (measured here: -0.3 to +0.2), so the
limit sits above that; the contention that matters is a whole core. Where
``/proc/stat`` cannot be read, nothing is judged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

#: Average cores that other processes may have used during a timed round.
FOREIGN_LIMIT_CORES = 0.3
#: Average cores that the hypervisor may have taken (steal time) during a timed round.
STEAL_LIMIT_CORES = 0.05
#: Longest wait for a quiet machine before a disturbed round is timed again.
QUIET_WAIT_S = 0.5
#: Length of each look at the machine while waiting for it to go quiet.
QUIET_PROBE_S = 0.2

_STAT = Path("/proc/stat")


def _machine_ticks() -> tuple[float, float] | None:
    """(busy, steal) seconds of every CPU since boot, or None where unreadable."""
    try:
        fields = _STAT.read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
    except (OSError, IndexError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    busy = sum(values[i] for i in (0, 1, 2, 5, 6) if i < len(values))
    steal = values[7] if len(values) > 7 else 0
    return busy / hz, steal / hz


def _own_cpu_s() -> float:
    """CPU seconds of this process, all its threads."""
    t = os.times()
    return t.user + t.system


class CpuWatch:
    """Other processes' and the hypervisor's share of the CPUs between ``start`` and ``stop``.

    Examples
    --------
    >>> watch = CpuWatch()
    >>> watch.start()
    >>> window = watch.stop()   # {"seconds", "foreign_cores", "steal_cores"} or None
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float, float] | None = None

    def start(self) -> None:
        ticks = _machine_ticks()
        self._start = None if ticks is None else (*ticks, _own_cpu_s(), time.perf_counter())

    def stop(self) -> dict[str, float] | None:
        """The window since :meth:`start`; None where the counters cannot be read."""
        ticks = _machine_ticks()
        if self._start is None or ticks is None:
            return None
        busy0, steal0, own0, wall0 = self._start
        seconds = time.perf_counter() - wall0
        if seconds <= 0:
            return None
        own = _own_cpu_s() - own0
        return {"seconds": seconds,
                "foreign_cores": max(0.0, (ticks[0] - busy0) - own) / seconds,
                "steal_cores": max(0.0, ticks[1] - steal0) / seconds}


def disturbance(window: dict[str, Any] | None) -> str | None:
    """Why a round timed over ``window`` does not describe the kernel alone (None: it does)."""
    if not window:
        return None
    reasons = []
    if window["foreign_cores"] > FOREIGN_LIMIT_CORES:
        reasons.append(f"other processes used {window['foreign_cores']:.2f} cores "
                       f"(limit {FOREIGN_LIMIT_CORES})")
    if window.get("steal_cores", 0.0) > STEAL_LIMIT_CORES:
        reasons.append(f"the hypervisor took {window['steal_cores']:.2f} cores "
                       f"(limit {STEAL_LIMIT_CORES})")
    return "; ".join(reasons) or None


def wait_for_quiet(max_wait: float = QUIET_WAIT_S, probe: float = QUIET_PROBE_S) -> float:
    """Sleep until other processes stay under the limits for one probe; seconds waited.

    Gives up after ``max_wait`` seconds (the measurement is then taken anyway and
    judged by its own window).
    """
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait:
        watch = CpuWatch()
        watch.start()
        time.sleep(probe)
        if disturbance(watch.stop()) is None:
            break
    return time.perf_counter() - started
