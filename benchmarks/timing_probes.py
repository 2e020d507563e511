"""Where a kernel's time moves between runs: the probes behind docs/method/noise.md.

Each probe isolates one suspect and prints what it saw (``--out`` also writes
``OUT.md`` and ``OUT.json``):

* ``processes`` -- one kernel alone in each of ``--procs`` fresh processes:
  prepare, warm calls, 0.5 s of timed calls, the median. The spread over
  processes is the per-process state, with nothing else running.
* ``threads`` -- during those timed calls, each thread's CPU time
  (``/proc/self/task/*/stat``), the CPUs it ran on, and the affinity mask:
  whether the pool's threads compute, wait, or share a core.
* ``spin`` -- after one call of a library, the CPU time its idle threads burn
  in each 25 ms of the next 0.4 s: how long a pool keeps spinning, which is
  how long it can take the cores from whoever runs next.
* ``order`` -- a call timed right after another library's call, after a
  cool-down, and after a cool-down and warm calls.
* ``wake`` -- each call one by one after an idle pause of 0.15 s: how much
  work it takes the cores the pause left idle to come back to full speed
  (what :data:`convbench.measure.cooldown.WARM_S` covers).
* ``alignment`` -- the same kernel on buffers placed at each offset within a
  cache line, interleaved in one process.
* ``hugepages`` -- transparent huge pages: the system setting and this
  process's ``AnonHugePages`` after the inputs of a large layer exist.
* ``contention`` -- each kernel in 0.1 s windows alone, then with one busy
  process beside it, with the other processes' cores that
  :class:`convbench.measure.disturbance.CpuWatch` saw in each window.
* ``drift`` -- the machine itself over time: the calibration kernel and a
  one-thread direct call, 0.2 s of each every second for ``--drift-s``
  seconds, nothing else running (what is left moves with the host, not with
  this VM's processes).

Usage::

    python benchmarks/timing_probes.py --out results/cpu/timing-probes
    python benchmarks/timing_probes.py --probe spin,order
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from convbench.measure import noise
from convbench.store.provenance import noise_verdict, provenance, with_json, with_markdown

LAYER = "mb1ic64ih56oc64kh3ph1"  # ResNet-50 res2_branch2b at batch 1
KERNELS = ("direct", "im2col", "winograd", "fft", "onednn")
PROBES = ("processes", "threads", "spin", "order", "wake", "alignment", "hugepages",
          "contention", "drift")
#: Calls timed one by one after the pause in the ``wake`` probe.
WAKE_CALLS = 12


def _task_stats() -> dict[int, tuple[int, int]]:
    """Thread id -> (utime + stime in clock ticks, CPU it last ran on)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12]), int(fields[36]))
    return out


def _prepared(kernel: str, desc: str = LAYER) -> Any:
    from convbench.measure.inputs import make_inputs  # noqa: PLC0415
    from convbench.problem import ConvProblem  # noqa: PLC0415
    from convbench.registry import get_kernel  # noqa: PLC0415

    p = ConvProblem.parse(desc)
    x, w, b = make_inputs(p)
    return get_kernel(kernel, "cpu").prepare(p, x, w, b)


def one_process(kernel: str) -> dict[str, Any]:
    """Run in a fresh process: one kernel's median, and what its threads did."""
    from convbench.measure.allocator import keep_freed_memory  # noqa: PLC0415
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    keep_freed_memory()
    with pinned_threads(None) as pinned:
        call = _prepared(kernel)
        for _ in range(5):
            call()
        main = threading.get_native_id()
        before, seen, times = _task_stats(), {}, []
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
            for tid, (_, cpu) in _task_stats().items():
                seen.setdefault(tid, set()).add(cpu)
        after = _task_stats()
    tick = os.sysconf("SC_CLK_TCK")
    busy = {tid: (after[tid][0] - before.get(tid, (0, 0))[0]) / tick for tid in after}
    wall = sum(times)
    return {"kernel": kernel, "median_ms": statistics.median(times) * 1e3, "calls": len(times),
            "threads": pinned["threads"],
            "busy_share": sorted((round(v / wall, 2) for t, v in busy.items() if v), reverse=True),
            "main_thread_share": round(busy.get(main, 0) / wall, 2),
            "cpus_seen": sorted({len(c) for t, c in seen.items() if busy.get(t)}),
            "affinity": sorted(os.sched_getaffinity(0))}


def probe_processes(procs: int) -> dict[str, Any]:
    out = {}
    for kernel in KERNELS:
        runs = []
        for _ in range(procs):
            done = subprocess.run([sys.executable, __file__, "--child", kernel],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        medians = [r["median_ms"] for r in runs]
        out[kernel] = {"medians_ms": [round(m, 3) for m in medians],
                       "spread": max(medians) / min(medians) - 1, "runs": runs}
        print(f"processes {kernel:9s} spread {out[kernel]['spread']:6.1%}  "
              + " ".join(f"{m:.3f}" for m in medians), flush=True)
    return out


def probe_spin() -> dict[str, Any]:
    """Idle threads' CPU use after one call, in 25 ms slices."""
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    with pinned_threads(None):
        calls = {k: _prepared(k) for k in KERNELS}
        for call in calls.values():
            call()
        for kernel, call in calls.items():
            time.sleep(0.5)
            call()
            slices, last = [], _task_stats()
            for _ in range(16):
                t0 = time.perf_counter()
                time.sleep(0.025)
                now = _task_stats()
                cpu = sum(now[t][0] - last.get(t, (0, 0))[0] for t in now) / tick
                slices.append(round(cpu / (time.perf_counter() - t0), 2))
                last = now
            out[kernel] = slices
            print(f"spin {kernel:9s} cores busy per 25 ms after one call: {slices}", flush=True)
    return out


def _median_of(call: Any, n: int = 15) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def probe_order() -> dict[str, Any]:
    """Each kernel timed right after each other kernel, after a pause, after a pause and
    warm calls (the first five calls' median each)."""
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    out: dict[str, Any] = {}
    with pinned_threads(None):
        calls = {k: _prepared(k) for k in KERNELS}
        for call in calls.values():
            call()
        for target, call in calls.items():
            row = {}
            for before, other in calls.items():
                if before == target:
                    continue
                cases = {}
                for label, pause, warm in (("right after", 0.0, 0), ("0.15 s pause", 0.15, 0),
                                           ("pause + 2 warm", 0.15, 2)):
                    samples = []
                    for _ in range(5):
                        other()
                        time.sleep(pause)
                        for _ in range(warm):
                            call()
                        t0 = time.perf_counter()
                        call()
                        samples.append(time.perf_counter() - t0)
                    cases[label] = statistics.median(samples) * 1e3
                row[before] = cases
            steady = _median_of(call) * 1e3
            out[target] = {"steady_ms": steady, "after": row}
            worst = max(row.items(), key=lambda kv: kv[1]["right after"])
            print(f"order {target:9s} steady {steady:.3f} ms; right after {worst[0]}: "
                  f"{worst[1]['right after']:.3f}, after a pause "
                  f"{worst[1]['0.15 s pause']:.3f}, pause + warm "
                  f"{worst[1]['pause + 2 warm']:.3f}", flush=True)
    return out


def probe_wake(pause: float = 0.15, repeats: int = 8) -> dict[str, Any]:
    """Each kernel's first :data:`WAKE_CALLS` calls after an idle pause, one by one (the
    median over ``repeats`` pauses), beside its steady call."""
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    out: dict[str, Any] = {}
    with pinned_threads(None):
        calls = {k: _prepared(k) for k in KERNELS}
        for call in calls.values():
            call()
        for name, call in calls.items():
            started = time.perf_counter()
            while time.perf_counter() - started < 0.3:  # past the previous kernel's spinning
                call()
            steady = _median_of(call) * 1e3
            rows = []
            for _ in range(repeats):
                time.sleep(pause)
                row = []
                for _ in range(WAKE_CALLS):
                    t0 = time.perf_counter()
                    call()
                    row.append((time.perf_counter() - t0) * 1e3)
                rows.append(row)
            after = [statistics.median(column) for column in zip(*rows, strict=True)]
            slow = [i for i, ms in enumerate(after) if ms > 1.1 * steady]
            settled = slow[-1] + 1 if slow else 0  # calls before the last one 10% above steady
            out[name] = {"steady_ms": steady, "after_pause_ms": after,
                         "calls_before_steady": settled,
                         "ms_before_steady": sum(after[:settled])}
            print(f"wake {name:9s} steady {steady:.3f} ms; after the pause "
                  + " ".join(f"{ms:.2f}" for ms in after[:6])
                  + f" ...; {settled} calls ({sum(after[:settled]):.1f} ms) before steady",
                  flush=True)
    return out


def probe_alignment(passes: int = 7) -> dict[str, Any]:
    """One kernel on inputs placed at 0, 16, 32, 48 bytes into a cache line, interleaved."""
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415
    from convbench.problem import ConvProblem  # noqa: PLC0415
    from convbench.registry import get_kernel  # noqa: PLC0415

    def placed(a: np.ndarray, offset: int) -> np.ndarray:
        raw = np.empty(a.nbytes + 4096 + offset, np.uint8)
        start = (-raw.ctypes.data) % 4096 + offset
        out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
        out[...] = a
        return out

    p = ConvProblem.parse(LAYER)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, p.input_shape).astype(np.float32)
    w = rng.uniform(-1, 1, p.weight_shape).astype(np.float32)
    out: dict[str, Any] = {}
    with pinned_threads(None):
        for kernel in ("direct", "winograd", "im2col"):
            calls = {off: get_kernel(kernel, "cpu").prepare(p, placed(x, off), placed(w, off),
                                                            None) for off in (0, 16, 32, 48)}
            for call in calls.values():
                call()
            samples: dict[int, list[float]] = {off: [] for off in calls}
            for _ in range(passes):
                for off, call in calls.items():
                    time.sleep(0.05)
                    call()
                    samples[off].append(_median_of(call, 10))
            out[kernel] = {str(off): statistics.median(v) * 1e3 for off, v in samples.items()}
            print(f"alignment {kernel:9s} " + "  ".join(
                f"+{off}: {ms:.3f} ms" for off, ms in out[kernel].items()), flush=True)
    return out


def probe_hugepages() -> dict[str, Any]:
    from convbench.measure.inputs import make_inputs  # noqa: PLC0415
    from convbench.problem import ConvProblem  # noqa: PLC0415

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "unreadable"

    x, w, _ = make_inputs(ConvProblem.parse("mb8ic64ih224oc64kh3ph1"))
    x += 0  # touch every page
    rollup = read("/proc/self/smaps_rollup")
    huge = next((line.split()[1] for line in rollup.splitlines()
                 if line.startswith("AnonHugePages")), "?")
    out = {"enabled": read("/sys/kernel/mm/transparent_hugepage/enabled"),
           "defrag": read("/sys/kernel/mm/transparent_hugepage/defrag"),
           "anon_huge_kb_with_a_103_MB_input": huge}
    print(f"hugepages {out}", flush=True)
    return out


def _window_median(call: Any, seconds: float) -> float:
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or not times:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def probe_contention(windows: int = 5) -> dict[str, Any]:
    """Each kernel alone and beside one busy process, 0.1 s windows (medians in ms)."""
    from convbench.measure.disturbance import CpuWatch  # noqa: PLC0415
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    out: dict[str, Any] = {}
    with pinned_threads(None):
        calls = {k: _prepared(k) for k in KERNELS}
        for kernel, call in calls.items():
            call()
            row: dict[str, Any] = {}
            for case in ("alone", "beside a busy process"):
                busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        if case != "alone" else None)
                time.sleep(0.3)
                medians, foreign = [], []
                for _ in range(windows):
                    watch = CpuWatch()
                    watch.start()
                    medians.append(_window_median(call, 0.1) * 1e3)
                    window = watch.stop() or {}
                    foreign.append(round(window.get("foreign_cores", float("nan")), 2))
                if busy is not None:
                    busy.kill()
                    busy.wait()
                row[case] = {"median_ms": statistics.median(medians), "foreign_cores": foreign}
            row["slowdown"] = (row["beside a busy process"]["median_ms"]
                               / row["alone"]["median_ms"])
            out[kernel] = row
            print(f"contention {kernel:9s} alone {row['alone']['median_ms']:.3f} ms, beside a "
                  f"busy process {row['beside a busy process']['median_ms']:.3f} ms "
                  f"({row['slowdown']:.1f}x)", flush=True)
    return out


def probe_drift(seconds: float = 60.0) -> dict[str, Any]:
    """Calibration kernel and a one-thread direct call every second (medians in ms)."""
    from convbench.measure.noise import calibrate  # noqa: PLC0415
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    samples: dict[str, list[float]] = {"calibration": [], "direct, 1 thread": []}
    with pinned_threads(1):
        call = _prepared("direct")
        call()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            samples["calibration"].append(calibrate(0.2)["median_s"] * 1e3)
            samples["direct, 1 thread"].append(_window_median(call, 0.2) * 1e3)
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
    out = {}
    for name, v in samples.items():
        out[name] = {"medians_ms": [round(x, 4) for x in v], "max_over_min": max(v) / min(v),
                     "p90_over_p10": statistics.quantiles(v, n=10)[-1]
                     / statistics.quantiles(v, n=10)[0]}
        print(f"drift {name}: max/min {out[name]['max_over_min']:.2f}, p90/p10 "
              f"{out[name]['p90_over_p10']:.2f} over {len(v)} seconds", flush=True)
    return out


def report(results: dict[str, Any]) -> str:
    lines = ["# Timing probes", "", f"Layer `{LAYER}` (ResNet-50 res2_branch2b, batch 1), "
             "all cores. See benchmarks/timing_probes.py for what each probe does.", ""]
    if "processes" in results:
        lines += ["## One kernel alone in each fresh process", "",
                  "| kernel | medians over processes (ms) | spread | busy share per thread | "
                  "main thread |", "|---|---|---:|---|---:|"]
        for k, r in results["processes"].items():
            shares = "; ".join(str(run["busy_share"]) for run in r["runs"][:3])
            main = statistics.median(run["main_thread_share"] for run in r["runs"])
            lines.append(f"| {k} | {' '.join(f'{m:.3f}' for m in r['medians_ms'])} | "
                         f"{r['spread']:.1%} | {shares} | {main} |")
    if "spin" in results:
        lines += ["", "## Cores busy in each 25 ms after one call (the process's threads)", "",
                  "| kernel | 0-400 ms |", "|---|---|"]
        lines += [f"| {k} | {' '.join(map(str, v))} |" for k, v in results["spin"].items()]
    if "order" in results:
        lines += ["", "## A call right after another library's (ms, median of 5)", "",
                  "| kernel | steady | after | right after | 0.15 s pause | pause + 2 warm |",
                  "|---|---:|---|---:|---:|---:|"]
        for k, r in results["order"].items():
            for before, cases in r["after"].items():
                lines.append(f"| {k} | {r['steady_ms']:.3f} | {before} | "
                             f"{cases['right after']:.3f} | {cases['0.15 s pause']:.3f} | "
                             f"{cases['pause + 2 warm']:.3f} |")
    if "wake" in results:
        lines += ["", "## Calls one by one after a 0.15 s idle pause (ms, median of 8 pauses)",
                  "", "| kernel | steady | " + " | ".join(f"call {i + 1}" for i in range(6))
                  + " | calls (ms) until within 10% of steady |",
                  "|---|---:|" + "---:|" * 6 + "---:|"]
        for k, r in results["wake"].items():
            lines.append(f"| {k} | {r['steady_ms']:.2f} | "
                         + " | ".join(f"{ms:.2f}" for ms in r["after_pause_ms"][:6])
                         + f" | {r['calls_before_steady']} ({r['ms_before_steady']:.1f}) |")
    if "alignment" in results:
        lines += ["", "## Inputs at each offset in a cache line (ms, interleaved)", "",
                  "| kernel | +0 | +16 | +32 | +48 |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {k} | " + " | ".join(f"{v:.3f}" for v in r.values()) + " |"
                  for k, r in results["alignment"].items()]
    if "hugepages" in results:
        lines += ["", "## Transparent huge pages", "", f"`{results['hugepages']}`"]
    if "contention" in results:
        lines += ["", "## Beside one busy process (ms, median of 0.1 s windows)", "",
                  "| kernel | alone | other processes' cores | beside a busy process | "
                  "other processes' cores | slowdown |", "|---|---:|---|---:|---|---:|"]
        for k, r in results["contention"].items():
            a, b = r["alone"], r["beside a busy process"]
            lines.append(f"| {k} | {a['median_ms']:.3f} | {a['foreign_cores']} | "
                         f"{b['median_ms']:.3f} | {b['foreign_cores']} | {r['slowdown']:.1f}x |")
    if "drift" in results:
        lines += ["", "## The machine over time (one sample a second, nothing else running)",
                  "", "| workload | seconds | max / min | p90 / p10 |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {len(r['medians_ms'])} | {r['max_over_min']:.2f} | "
                  f"{r['p90_over_p10']:.2f} |" for k, r in results["drift"].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", default=",".join(PROBES))
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--drift-s", type=float, default=60.0)
    parser.add_argument("--out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_process(args.child)))
        return 0
    wanted = args.probe.split(",")
    results: dict[str, Any] = {}
    start = noise.snapshot()
    if "processes" in wanted or "threads" in wanted:
        results["processes"] = probe_processes(args.procs)
    for name, fn in (("spin", probe_spin), ("order", probe_order), ("wake", probe_wake),
                     ("alignment", probe_alignment), ("hugepages", probe_hugepages)):
        if name in wanted:
            results[name] = fn()
    if "contention" in wanted:
        results["contention"] = probe_contention()
    if "drift" in wanted:
        results["drift"] = probe_drift(args.drift_s)
    machine = noise.noise(start, noise.snapshot())
    text = report(results)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        prov = provenance(repetitions={"probes": wanted, "processes": args.procs,
                                       "drift_s": args.drift_s,
                                       "per_probe": "see benchmarks/timing_probes.py"},
                          noise=noise_verdict(machine))
        out.with_suffix(".md").write_text(with_markdown(text + "\n", prov))
        out.with_suffix(".json").write_text(json.dumps(with_json(results, prov), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
