"""The pause before a measurement: until this process's idle thread pools stop spinning.

After a call, OpenBLAS's worker threads keep spinning for about 100 ms and
torch's OpenMP threads for about 25 ms on this project's machine, while
Numba's workqueue threads go to sleep at once. Whatever runs next on the same
cores shares them with the spinners. :func:`cool_down` waits until the
process's other threads have used (almost) no CPU for two consecutive
slices, and never longer than the given limit, so a pause after Numba costs
a few milliseconds and one after OpenBLAS what OpenBLAS needs. The threads'
CPU time comes from ``/proc/self/task/*/schedstat`` (nanoseconds); where that
cannot be read, it sleeps the whole limit.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

#: Length of one look at the other threads.
SLICE_S = 0.01
#: Share of one core the other threads may use in a slice that counts as idle.
IDLE_SHARE = 0.05
#: Consecutive idle slices that end the pause.
IDLE_SLICES = 2

_TASKS = Path("/proc/self/task")


def other_threads_cpu_ns() -> int | None:
    """CPU time of this process's threads other than the calling one (ns), or None."""
    me = str(threading.get_native_id())
    total = 0
    try:
        tasks = os.listdir(_TASKS)
    except OSError:
        return None
    for tid in tasks:
        if tid == me:
            continue
        try:
            total += int((_TASKS / tid / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def cool_down(limit: float) -> float:
    """Sleep until the other threads are idle, at most ``limit`` seconds; seconds slept.

    Parameters
    ----------
    limit : float
        Longest pause (the sweep's ``--cooldown``). 0 returns at once.
    """
    if limit <= 0:
        return 0.0
    started = time.perf_counter()
    last = other_threads_cpu_ns()
    if last is None:
        time.sleep(limit)
        return time.perf_counter() - started
    idle = 0
    while idle < IDLE_SLICES:
        left = limit - (time.perf_counter() - started)
        if left <= 0:
            break
        t0 = time.perf_counter()
        time.sleep(min(SLICE_S, left))
        now = other_threads_cpu_ns()
        if now is None:
            break
        elapsed = time.perf_counter() - t0
        busy_share = (now - last) / 1e9 / elapsed if elapsed > 0 else 0.0
        idle = idle + 1 if busy_share < IDLE_SHARE else 0
        last = now
    return time.perf_counter() - started
