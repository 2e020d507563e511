"""oneDNN in each of its configurations, per layer, interleaved: what ``onednn_best`` chooses from.

For every layer, in each of ``--processes`` worker processes, the calls below
are prepared once and interleaved for ``--pairs`` passes, each sample after a
cool-down and warm calls (:func:`convbench.measure.peers.time_interleaved`):

* ``plain`` -- ``conv2d`` on NCHW tensors with plain weights (the ``onednn``
  baseline: oneDNN reorders the weights inside every call);
* ``prepacked`` -- weights reordered once into oneDNN's blocked layout, the
  input converted and the output converted back inside the call (float32);
* ``cl_inside`` -- weights in channels-last once, the activations converted to
  channels-last and back inside the call;
* ``onednn_best`` -- the baseline itself, which chose one of the three above
  at its ``prepare`` by timing them on samples of its own (the table names
  its choice in each process);
* ``onednn_cl`` -- channels-last tensors end to end: another input layout.

Each is reported as its median time and as ``t_config / t_onednn_best``
with the interval over the processes (> 1: slower than ``onednn_best``);
``onednn_best`` must never be slower than the plain call beyond that
interval, and the report says where it is.

Usage::

    python benchmarks/onednn_configs.py --suite resnet50 --batch 1,8 \\
        --out results/cpu/onednn_configs_resnet50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from convbench.measure.clocks import make_clock
from convbench.measure.cooldown import WARM_S
from convbench.measure.inputs import make_inputs
from convbench.measure.noise import noise, noise_line, snapshot
from convbench.measure.peer_workers import DEFAULT_PROCESSES, PeerWorkers
from convbench.measure.peers import ratio_interval, time_interleaved
from convbench.measure.threads import pinned_threads
from convbench.problem import ConvProblem, normalize_direction
from convbench.problem.suites import load_suite
from convbench.registry import get_kernel
from convbench.store.provenance import markdown_block, noise_verdict, provenance

#: The configurations in table order; ``onednn_best`` is what the others are divided by.
CONFIGS = ("plain", "prepacked", "cl_inside", "onednn_best", "onednn_cl")
BEST = "onednn_best"


def measure_once(p: ConvProblem, passes: int, sample_time: float,
                 cooldown: float) -> dict[str, Any]:
    """One process's samples (seconds) of every configuration, and onednn_best's choice."""
    from convbench.kernels.baselines.onednn import channels_last_call, nchw_configurations

    x, w, b = make_inputs(p)
    calls = dict(nchw_configurations(p, x, w, b))
    best = get_kernel(BEST).prepare(p, x, w, b)
    calls[BEST] = best
    calls["onednn_cl"] = channels_last_call(p, x, w, b)
    for call in calls.values():
        call()
    samples = time_interleaved(calls, passes=passes, sample_time=sample_time,
                               cooldown=cooldown, clock=make_clock("host"))
    return {"samples_s": samples, "chosen": best.details.get("configuration")}


def measure_layer(workers: PeerWorkers, p: ConvProblem, passes: int, sample_time: float,
                  cooldown: float) -> dict[str, Any]:
    """Every process's samples merged, each configuration's median and its ratio to
    onednn_best with the interval over the processes."""
    parts = workers.run_each(measure_once, p, passes, sample_time, cooldown)
    names = [n for n in CONFIGS if all(n in part["samples_s"] for part in parts)]
    samples = {n: [v for part in parts for v in part["samples_s"][n]] for n in names}
    processes = [i for i, part in enumerate(parts) for _ in part["samples_s"][BEST]]
    out: dict[str, Any] = {"name": p.name, "problem": str(p), "mb": p.mb, "dir": p.dir,
                           "chosen": [part["chosen"] for part in parts],
                           "median_ms": {n: statistics.median(s) * 1e3
                                         for n, s in samples.items()},
                           "samples_ms": {n: [v * 1e3 for v in s] for n, s in samples.items()},
                           "process_of_pass": processes, "over_best": {}}
    for n in names:
        if n == BEST:
            continue
        iv = ratio_interval([a / b for a, b in zip(samples[n], samples[BEST], strict=True)],
                            processes)
        out["over_best"][n] = {"ratio": iv.value, "lo": iv.lo, "hi": iv.hi, "level": iv.label}
    return out


def report(layers: list[dict[str, Any]], run: dict[str, Any]) -> str:
    """The per-layer table, the checks, and the machine's noise line."""
    lines = [f"oneDNN's time per configuration, ms (median of {run['pairs']} interleaved passes "
             f"in each of {run['processes']} worker processes, {run['threads']} threads, a "
             f"cool-down and {WARM_S * 1e3:.0f} ms of warm calls before each sample), and "
             "t_config / t_onednn_best with its 95% interval over the processes (> 1: slower "
             "than onednn_best). `onednn_cl` runs channels-last tensors end to end: another "
             "input layout. `chosen`: onednn_best's choice at prepare in each process.\n",
             "| dir | layer | mb | " + " | ".join(f"{n} ms" for n in CONFIGS)
             + " | chosen | plain / best | prepacked / best | cl_inside / best | "
             "onednn_cl / best |",
             "|---|---|---:|" + "---:|" * len(CONFIGS) + "---|" + "---:|" * 4]
    slower = []
    for r in layers:
        times = [f"{r['median_ms'][n]:.3f}" if n in r["median_ms"] else "—" for n in CONFIGS]
        ratios = []
        for n in ("plain", "prepacked", "cl_inside", "onednn_cl"):
            o = r["over_best"].get(n)
            ratios.append("—" if o is None else
                          f"{o['ratio']:.2f} [{o['lo']:.2f}, {o['hi']:.2f}]")
        plain = r["over_best"].get("plain")
        if plain is not None and plain["hi"] < 1:
            slower.append(f"{r['name']} mb{r['mb']} {r['dir']} ({plain['ratio']:.2f} "
                          f"[{plain['lo']:.2f}, {plain['hi']:.2f}])")
        lines.append(f"| {r['dir']} | {r['name']} | {r['mb']} | " + " | ".join(times)
                     + f" | {', '.join(dict.fromkeys(map(str, r['chosen'])))} | "
                     + " | ".join(ratios) + " |")
    lines.append("")
    lines.append("onednn_best slower than the plain call beyond the interval (plain / best "
                 "entirely below 1): " + ("; ".join(slower) if slower else
                                          f"none of {len(layers)} layers") + ".")
    for kind in ("plain", "onednn_cl"):
        values = [r["over_best"][kind]["ratio"] for r in layers if kind in r["over_best"]]
        if values:
            lines.append(f"{kind} / onednn_best over the layers: median "
                         f"{statistics.median(values):.2f}, range {min(values):.2f}-"
                         f"{max(values):.2f}.")
    counts: dict[str, int] = {}
    for r in layers:
        for c in r["chosen"]:
            counts[str(c)] = counts.get(str(c), 0) + 1
    lines.append("onednn_best's choices (layer x process): "
                 + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) + ".")
    if run.get("noise"):
        lines.append("\n" + noise_line(run["noise"]))
    return "\n".join(lines)


def save(out: str, layers: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """``OUT.md`` and ``OUT.json``, each with its provenance."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = provenance(repetitions={"passes_per_process": run["pairs"],
                                   "processes": run["processes"], "warm_s": WARM_S},
                      noise=noise_verdict(run.get("noise"), "interrupted before the closing "
                                                            "calibration"),
                      command=[sys.executable, *sys.argv])
    path.with_suffix(".md").write_text(markdown_block(prov) + "\n" + report(layers, run) + "\n")
    path.with_suffix(".json").write_text(json.dumps(
        {"provenance": prov, **{k: v for k, v in run.items() if k != "start"},
         "layers": layers}, indent=1, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="resnet50")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--direction", default="fwd")
    parser.add_argument("--pairs", type=int, default=2, help="passes per process (2)")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--sample-time", type=float, default=0.02)
    parser.add_argument("--cooldown", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--match", help="regex on layer names")
    parser.add_argument("--out")
    args = parser.parse_args()
    if get_kernel("onednn").supports(ConvProblem.parse("ic1ih3oc1kh1")) is not None:
        print("torch is not installed: pip install 'convbench[compare]'", file=sys.stderr)
        return 2
    problems = []
    for d in (normalize_direction(d) for d in args.direction.split(",") if d):
        for mb in (int(b) for b in args.batch.split(",")):
            for layer in load_suite(args.suite):
                p = layer.problem.with_(mb=mb)
                problems.append(p if d == "fwd" else replace(p, dir=d, bias=d == "bwd_wb"))
    if args.match:
        import re  # noqa: PLC0415

        problems = [p for p in problems if re.search(args.match, p.name)]
    run: dict[str, Any] = {"suite": args.suite, "pairs": args.pairs,
                           "processes": args.processes, "start": snapshot()}
    layers: list[dict[str, Any]] = []
    with pinned_threads(args.threads) as pinned, \
            PeerWorkers(args.processes, args.threads) as workers:
        run["threads"] = pinned["threads"]
        try:
            for p in problems:
                layers.append(measure_layer(workers, p, args.pairs, args.sample_time,
                                            args.cooldown))
                r = layers[-1]
                print(f"{p.dir} {p.name:22s} mb{p.mb}: chosen {r['chosen']}  " + "  ".join(
                    f"{n} {o['ratio']:.2f}" for n, o in r["over_best"].items()), flush=True)
                if args.out:
                    save(args.out, layers, run)
        except KeyboardInterrupt:
            print(f"interrupted after {len(layers)} layers", file=sys.stderr)
    run["noise"] = noise(run["start"], snapshot())
    print(report(layers, run))
    if args.out:
        save(args.out, layers, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
