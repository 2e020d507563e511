"""Accuracy sweeps on a LocalCluster of 1 and 2 workers, against the same sweep without Dask.

Each configuration runs the same ``convbench run --mode accuracy`` command in a fresh
process, interleaved round by round (no Dask, local:1, local:2, no Dask, ...) with a
short pause between, so that a shared machine's load falls on all of them alike. A
LocalCluster of N workers gives each measurement cores/N threads, so every
configuration uses every core: the comparison is processes against threads.

Reported per configuration: the median wall time of the command (start-up
included) and, for the Dask runs, of the sweep itself (first measurement's start
to last one's end, from the records' ``measured_at``); the ratios within each
round, where the machine's load fell alike, and their medians; and the load
average before each run (a shared machine's other tenants show there).

    python benchmarks/cluster_speedup.py --rounds 3 --out results/cpu/cluster_speedup
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convbench.measure import noise
from convbench.store.provenance import noise_verdict, provenance, with_json, with_markdown

CONFIGS = {"no Dask": [], "local:1": ["--scheduler", "local:1"],
           "local:2": ["--scheduler", "local:2"]}
SWEEP = ["--suite", "alexnet,resnet50", "--algo", "direct,im2col,fft,winograd", "--batch", "1",
         "--mode", "accuracy", "--no-progress"]


def run_once(extra: list[str], folder: Path) -> tuple[float, float | None, int]:
    """Wall seconds of one sweep, its measuring span (Dask runs), and its record count."""
    out = folder / f"run-{time.monotonic_ns()}.jsonl"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "convbench.cli", "run", *SWEEP, *extra,
                           "--out", str(out)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    results = [r for r in records if r["type"] == "result"]
    spans = [span for r in results for span in r.get("measured_at", [])]  # one per round
    span = max(e for _, e in spans) - min(s for s, _ in spans) if spans else None
    return wall, span, len(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in CONFIGS}
    spans: dict[str, list[float]] = {name: [] for name in CONFIGS}
    loads: dict[str, list[float]] = {name: [] for name in CONFIGS}
    counts = set()
    start = noise.snapshot()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, extra in CONFIGS.items():
                time.sleep(0.15)
                loads[name].append(os.getloadavg()[0])
                wall, span, count = run_once(extra, Path(tmp))
                walls[name].append(wall)
                if span is not None:
                    spans[name].append(span)
                counts.add(count)
                print(f"{name}: {wall:.1f} s wall" + (f", sweep {span:.1f} s" if span else "")
                      + f", load {loads[name][-1]:.1f}", file=sys.stderr)
    machine = noise.noise(start, noise.snapshot())
    med = {k: statistics.median(v) for k, v in walls.items()}
    workers = [a / b for a, b in zip(spans["local:1"], spans["local:2"], strict=True)]
    dask = [a / b for a, b in zip(walls["no Dask"], walls["local:2"], strict=True)]
    lines = ["# Accuracy sweep: 2 Dask workers against 1, and against no Dask\n",
             f"`convbench run {' '.join(SWEEP)}` ({', '.join(map(str, sorted(counts)))} "
             f"measurements), {args.rounds} interleaved rounds on {os.cpu_count()} cores of a "
             "shared machine; medians.\n",
             "| configuration | wall s (median) | wall s, each round | sweep s, each round "
             "| load average before, each round |",
             "|---|---:|---|---|---|"]
    for name in CONFIGS:
        each = ", ".join(f"{w:.1f}" for w in walls[name])
        sweep = ", ".join(f"{w:.1f}" for w in spans[name]) or "—"
        load = ", ".join(f"{w:.1f}" for w in loads[name])
        lines.append(f"| {name} | {med[name]:.1f} | {each} | {sweep} | {load} |")
    lines += ["", f"* local:1 / local:2, sweep time, per round: "
              f"{', '.join(f'{r:.2f}' for r in workers)}; median "
              f"{statistics.median(workers):.2f}x",
              f"* no Dask / local:2, wall time, per round: {', '.join(f'{r:.2f}' for r in dask)}"
              f"; median {statistics.median(dask):.2f}x"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        prov = provenance(repetitions={"rounds": args.rounds, "configurations": list(CONFIGS),
                                       "order": "interleaved, one sweep each per round"},
                          noise=noise_verdict(machine))
        Path(f"{args.out}.md").write_text(with_markdown(text, prov))
        Path(f"{args.out}.json").write_text(json.dumps(with_json(
            {"sweep": SWEEP, "rounds": args.rounds, "cpu_count": os.cpu_count(),
             "wall_s": walls, "sweep_s": spans, "loadavg": loads}, prov), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
