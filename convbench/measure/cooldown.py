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

A pause has its own cost: the cores it leaves idle come back slowly.
:func:`warm_up` makes the untimed calls that bring them back
(:data:`WARM_S`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: Length of one look at the other threads.
SLICE_S = 0.01
#: Share of one core the other threads may use in a slice that counts as idle.
IDLE_SHARE = 0.05
#: Consecutive idle slices that end the pause.
IDLE_SLICES = 2

_TASKS = Path("/proc/self/task")

#: Seconds of a call's own untimed work after a pause, before it is timed. After
#: 0.15 s idle, this project's 2-core guest ran ResNet-50 res4's Winograd bwd_d
#: (6 ms steady) in 22 ms, then 7-11 ms, and was steady after about 50 ms;
#: oneDNN's call of the same layer likewise. A single warm call leaves the
#: next ones slow by amounts that differ between kernels: by 2x for one whose
#: call hands work to its threads twenty times, by 1.3x for one that wakes
#: its threads once.
WARM_S = 0.05


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


def warm_up(fn: Callable[[], object], seconds: float, calls: int = 1) -> list[float]:
    """Call ``fn`` untimed, at least ``calls`` times and until ``seconds`` have passed.

    Returns
    -------
    list of float
        Each call's seconds (wall clock).
    """
    times: list[float] = []
    while len(times) < calls or sum(times) < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
