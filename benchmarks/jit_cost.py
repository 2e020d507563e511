"""Numba JIT cost of the CPU kernels: compile time on an empty cache, load time on a full one.

Two fresh interpreters share a new, empty ``NUMBA_CACHE_DIR``: the first
compiles every kernel's code paths and writes them to the cache, the second
loads them. Each prints, per kernel, its first ``prepare`` + call and a steady
one (median of the next five) summed
over the problems of :data:`convbench.measure.jitcost.PROBLEMS` (one per compiled
code path); the difference is the compile or the load time. The first
compiled call of a process also starts Numba's code generator and threading
layer; a tiny parallel function takes that cost first ("numba start-up").
Numba's cache counters of the second process must show no miss.

Usage::

    python benchmarks/jit_cost.py [--out results/cpu/jit_cost]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from convbench.measure import noise
from convbench.measure.jitcost import PROBLEMS, STEADY_CALLS, measure_in_fresh_process
from convbench.store.provenance import noise_verdict, provenance, with_json, with_markdown


def table(cold: dict, warm: dict) -> str:
    lines = ["| kernel | compile: first call − steady (s) | load: first call − steady (s) "
             "| steady prepare + call (ms) |", "|---|---:|---:|---:|"]
    for name, c in cold["kernels"].items():
        w = warm["kernels"][name]
        lines.append(f"| {name} | {c['jit_s']:.2f} | {w['jit_s']:.3f} "
                     f"| {1e3 * w['steady_call_s']:.2f} |")
    misses = {n: c["misses"] for n, c in warm["cache"].items() if c["misses"]}
    lines += [
        "",
        f"Whole child process: {cold['process_s']:.1f} s on the empty cache, "
        f"{warm['process_s']:.1f} s on the full one (importing NumPy, SciPy, Numba and the "
        f"kernel modules: {warm['import_s']:.2f} s).",
        f"Second process: {sum(c['hits'] for c in warm['cache'].values())} cache loads over "
        f"{len(warm['cache'])} compiled functions, "
        + ("no recompilation." if not misses else f"**recompiled**: {misses}."),
        f"Problems: {', '.join(PROBLEMS)} (float32); each timing is `prepare` and one call; "
        f"steady: the median of the {STEADY_CALLS} after the first.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write OUT.md and OUT.json too")
    args = parser.parse_args()
    start = noise.snapshot()
    with tempfile.TemporaryDirectory(prefix="convbench-numba-cache-") as cache_dir:
        cold = measure_in_fresh_process(cache_dir)
        warm = measure_in_fresh_process(cache_dir)
    machine = noise.noise(start, noise.snapshot())
    text = table(cold, warm)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        prov = provenance(repetitions={"processes": {"empty cache": 1, "full cache": 1},
                                       "steady_calls": STEADY_CALLS},
                          noise=noise_verdict(machine))
        out.with_suffix(".md").write_text(with_markdown(text + "\n", prov))
        out.with_suffix(".json").write_text(json.dumps(
            with_json({"cold": cold, "warm": warm}, prov), indent=1))
    misses = any(c["misses"] for c in warm["cache"].values())
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
