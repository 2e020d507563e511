"""How quiet the machine was during a run, and the settings that slow a library here.

A run records, at its start and at its end, a calibration: a fixed
single-threaded NumPy workload timed for :data:`CALIBRATION_SECONDS`. If the
machine's speed changed during the run (another tenant, a frequency change)
the two disagree. It also records the load average, the CPU frequency where
the OS shows it, and the CPU time that *other* processes used while the run
went on: ``/proc/stat``'s busy time of the whole machine minus this process's
and its workers' own. A run is called noisy when any of them crosses its
limit below, and its printed table says so.

:func:`setting_warnings` names the environment settings that make a library
slower on this CPU than it could be (a BLAS kernel set older than the CPU,
more threads than cores), for the printed table rather than only a field in
the environment.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Seconds each calibration lasts.
CALIBRATION_SECONDS = 0.3
#: The run is noisy when the end's calibration median differs from the start's by more.
NOISY_DRIFT = 0.10
#: ... or a calibration's own p90/p10 exceeds this (the machine jittered while it ran).
NOISY_SPREAD = 1.25
#: ... or other processes used more than this many cores on average during the run.
NOISY_FOREIGN_CORES = 0.10

#: OpenBLAS core types by the widest vector extension their kernels use.
OPENBLAS_CORE_ISA = {
    "prescott": "sse", "core2": "sse", "penryn": "sse", "dunnington": "sse",
    "nehalem": "sse", "atom": "sse", "opteron": "sse", "barcelona": "sse",
    "bobcat": "sse", "sandybridge": "avx", "bulldozer": "avx", "piledriver": "avx",
    "steamroller": "avx2", "excavator": "avx2", "haswell": "avx2", "zen": "avx2",
    "skylake": "avx2", "skylakex": "avx512", "cooperlake": "avx512",
    "sapphirerapids": "avx512",
}
ISA_ORDER = ("sse", "avx", "avx2", "avx512")


def calibrate(seconds: float = CALIBRATION_SECONDS) -> dict[str, Any]:
    """Time a fixed single-threaded workload (``c = a * b + a`` on 2^20 float32 values).

    Returns
    -------
    dict
        ``median_s``, ``p10_s``, ``p90_s``, ``reps``.
    """
    a = np.linspace(0.5, 1.5, 1 << 20, dtype=np.float32)
    b = a[::-1].copy()
    c = np.empty_like(a)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        np.multiply(a, b, out=c)
        np.add(c, a, out=c)
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=10)
    return {"median_s": statistics.median(times), "p10_s": q[0], "p90_s": q[-1],
            "reps": len(times)}


def _machine_busy_s() -> float | None:
    """Seconds of CPU time every CPU has spent busy since boot (``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    # user nice system idle iowait irq softirq steal (guest is inside user)
    busy = sum(values[i] for i in (0, 1, 2, 5, 6, 7) if i < len(values))
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and its finished children (the sweep's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cpu_mhz() -> list[float]:
    """Current frequency of each CPU in MHz, where the OS shows it (else empty)."""
    freqs = []
    for path in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        try:
            freqs.append(int(path.read_text()) / 1000)
        except (OSError, ValueError):
            pass
    if freqs:
        return freqs
    try:
        return [float(line.split(":")[1]) for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("cpu MHz")]
    except (OSError, ValueError, IndexError):
        return []


def snapshot() -> dict[str, Any]:
    """Calibration, load average and frequency now, with the counters :func:`noise` needs."""
    busy0, own0, wall0 = _machine_busy_s(), _own_cpu_s(), time.perf_counter()
    cal = calibrate()
    busy1, own1, wall1 = _machine_busy_s(), _own_cpu_s(), time.perf_counter()
    out: dict[str, Any] = {"calibration": cal, "loadavg": list(os.getloadavg()),
                           "cpu_mhz": cpu_mhz(), "time": time.time(),
                           "wall": wall1, "busy_s": busy1, "own_cpu_s": own1}
    if busy0 is not None and busy1 is not None:
        out["calibration"]["foreign_cores"] = max(
            0.0, ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))
    return out


def noise(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """How noisy the run between two :func:`snapshot` s was, and why.

    Returns
    -------
    dict
        ``noisy`` (bool), ``reasons`` (list of str), ``drift`` (end / start
        calibration median - 1), ``foreign_cores`` (other processes' average
        CPU use during the run), ``start`` and ``end`` (the snapshots'
        calibrations, load averages and frequencies).
    """
    reasons = []
    drift = end["calibration"]["median_s"] / start["calibration"]["median_s"] - 1
    if abs(drift) > NOISY_DRIFT:
        reasons.append(f"the calibration kernel ran {drift:+.0%} at the end against the start "
                       f"(limit {NOISY_DRIFT:.0%})")
    for when, snap in (("start", start), ("end", end)):
        cal = snap["calibration"]
        spread = cal["p90_s"] / cal["p10_s"]
        if spread > NOISY_SPREAD:
            reasons.append(f"the calibration at the {when} jittered (p90/p10 {spread:.2f}, "
                           f"limit {NOISY_SPREAD})")
        if cal.get("foreign_cores", 0.0) > NOISY_FOREIGN_CORES:
            reasons.append(f"other processes used {cal['foreign_cores']:.2f} cores during the "
                           f"calibration at the {when}")
    foreign = None
    if start.get("busy_s") is not None and end.get("busy_s") is not None:
        wall = end["wall"] - start["wall"]
        foreign = max(0.0, ((end["busy_s"] - start["busy_s"])
                            - (end["own_cpu_s"] - start["own_cpu_s"])) / wall) if wall else 0.0
        if foreign > NOISY_FOREIGN_CORES:
            reasons.append(f"other processes used {foreign:.2f} cores on average during the run "
                           f"(limit {NOISY_FOREIGN_CORES})")
    keep = ("calibration", "loadavg", "cpu_mhz")
    return {"noisy": bool(reasons), "reasons": reasons, "drift": drift,
            "foreign_cores": foreign, "start": {k: start[k] for k in keep},
            "end": {k: end[k] for k in keep}}


def noise_line(summary: dict[str, Any]) -> str:
    """One line for the printed table: quiet or noisy, with the figures."""
    load = summary["start"]["loadavg"][0], summary["end"]["loadavg"][0]
    foreign = summary.get("foreign_cores")
    figures = (f"calibration drift {summary['drift']:+.1%}, load average {load[0]:.2f} -> "
               f"{load[1]:.2f}" + (f", other processes {foreign:.2f} cores" if foreign is not
                                   None else ""))
    if not summary["noisy"]:
        return f"Machine: quiet ({figures})."
    return (f"**Machine: noisy** ({figures}): " + "; ".join(summary["reasons"])
            + ". Read its times with that in mind.")


def _cpu_isa(flags: set[str]) -> str:
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if "avx" in flags:
        return "avx"
    return "sse"


def setting_warnings(threads: int | None, flags: set[str] | None = None,
                     environ: dict[str, str] | None = None) -> list[str]:
    """Settings of this run that make a library slower here than it could be.

    Parameters
    ----------
    threads : int or None
        Threads the run pins (None: all cores).
    flags : set of str, optional
        The CPU's ``/proc/cpuinfo`` flags (default: this CPU's).
    environ : dict, optional
        The environment (default: ``os.environ``).
    """
    from convbench.measure.platforms import cpu_flags  # noqa: PLC0415

    flags = cpu_flags() if flags is None else flags
    environ = dict(os.environ) if environ is None else environ
    out = []
    cpu = _cpu_isa(flags) if flags else None
    core = environ.get("OPENBLAS_CORETYPE")
    if core and cpu:
        isa = OPENBLAS_CORE_ISA.get(core.lower())
        if isa is not None and ISA_ORDER.index(isa) < ISA_ORDER.index(cpu):
            out.append(f"OPENBLAS_CORETYPE={core} forces OpenBLAS's {isa.upper()} kernels on "
                       f"this {cpu.upper()} CPU: its GEMMs (im2col, Winograd, FFT's "
                       "contraction) run slower than the CPU allows")
    cap = environ.get("ONEDNN_MAX_CPU_ISA")
    if cap and cpu and cap.lower() not in ("all", "default") and \
            not cap.lower().startswith("avx512" if cpu == "avx512" else cpu):
        out.append(f"ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below this {cpu.upper()} CPU")
    if environ.get("NUMBA_CPU_NAME"):
        out.append(f"NUMBA_CPU_NAME={environ['NUMBA_CPU_NAME']} makes Numba compile for that "
                   "CPU, not this one")
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if threads is not None and threads > cores:
        out.append(f"{threads} threads on {cores} cores: threads wait for each other's cores")
    return out
