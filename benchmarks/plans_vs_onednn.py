"""Tuned plans (``convbench.plan`` callables) against oneDNN and best-of-convbench, interleaved.

Two measurements, each in this one process with every contender prepared
once, warmed up and interleaved ``A B C A B C ...`` per layer (through
:func:`convbench.measure.peers.time_interleaved`: a cool-down and one
untimed call before every sample, so each library runs in its steady state):

1. **Whole network.** Per layer: the tuned plan called as ``plan(x)`` (its
   choice from the plan cache ``--plans``, made by ``convbench tune``; the
   call copies ``x`` into the plan's buffer), oneDNN, and every convbench
   kernel's prepared call. A pass's whole-network time is the sum over
   layers of that pass's sample x the layer's repeat count. Reported per
   pass and as the median over passes: oneDNN / plan, and best-of-convbench
   / plan, where best-of-convbench takes per layer and pass the convbench
   kernel that was fastest on the run's *other* passes (median; cross-fitted,
   so the pick is not flattered by the sample it reports) among those whose
   error, as the cache recorded it, meets the plan's budget. oneDNN is
   ``onednn_best`` (NCHW in and out, its fastest configuration). The run's noise is half
   the range over passes of that second ratio.
2. **Plan overhead.** FFT and Winograd called through ``plan`` against their
   prepared calls (and, for reference, with their ``prepare`` in every call,
   i.e. the weights transformed per call): prepared / plan per layer, on
   ResNet-50's 3x3 layers and GoogLeNet's 5x5 ones.

Usage::

    convbench tune --suite resnet50 --batch 1 --backend cpu --budget 1e-6 --out plans.json
    convbench tune --suite resnet50 --batch 8 --backend cpu --budget 1e-6 --out plans.json
    python benchmarks/plans_vs_onednn.py --plans plans.json --batch 1,8 [--out OUT]
    python benchmarks/plans_vs_onednn.py --plans plans.json --quick   # a few layers, batch 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import convbench
from convbench.measure import noise
from convbench.measure.clocks import make_clock
from convbench.measure.inputs import random_inputs
from convbench.measure.peers import geomean, time_interleaved
from convbench.measure.stats import crossfit_fastest
from convbench.measure.threads import pinned_threads
from convbench.plans import cache
from convbench.problem import ConvProblem
from convbench.problem.suites import load_suite
from convbench.registry import get_kernel, kernels
from convbench.store.provenance import noise_verdict, provenance, with_json, with_markdown

#: oneDNN with NCHW in and out in its fastest configuration (chosen at its prepare).
PEER = "onednn_best"
PLAN = "plan"
QUICK_LAYERS = ("conv1", "res2_branch2b", "res3_branch2a", "res4_branch2b", "res5_branch2c")


@dataclass
class LayerSamples:
    """One layer's interleaved samples (seconds per call, one per pass)."""

    name: str
    problem: str
    repeat: int
    chosen: str
    budget: float
    admissible: list[str]
    samples: dict[str, list[float]] = field(default_factory=dict)


def conv_arguments(p: ConvProblem) -> dict[str, Any]:
    """``stride``, ``padding``, ``dilation``, ``groups`` that describe ``p`` again."""
    natural = (p.oh, p.ow) == (p.natural_oh, p.natural_ow)
    return {"stride": p.stride, "padding": (p.ph, p.pw) if natural else p.padding,
            "dilation": p.dilation, "groups": p.g}


def tuned_plan(p: ConvProblem, w: Any, b: Any, plans: Path) -> tuple[Any, dict[str, Any]]:
    """The plan ``algo="auto"`` makes for ``p`` and the cache entry it came from.

    Raises
    ------
    SystemExit
        The cache has no plan for ``p`` on this platform: the comparison would
        measure the documented rule instead of a tuned plan.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.PlanCacheWarning)
        try:
            entry = cache.find_entry(p, "cpu", plans)
        except cache.PlanCacheWarning as exc:
            raise SystemExit(f"{plans}: {exc}") from None
    if entry is None:
        raise SystemExit(f"{plans} has no plan for {p.name} ({cache.entry_key(p)}) on this "
                         f"platform: run convbench tune --batch {p.mb} first")
    f = convbench.plan(p.input_shape, w, b, **conv_arguments(p))
    if cache.entry_key(f.problem) != cache.entry_key(p) or \
            f.kernel.name != entry["choice"]["kernel"]:
        raise SystemExit(f"{p.name}: the plan made ({f.kernel.name}, {f.problem}) is not the "
                         f"cache's ({entry['choice']['kernel']}, {entry['problem']})")
    return f, entry


def prepared_calls(p: ConvProblem, x: Any, w: Any, b: Any,
                   names: list[str]) -> dict[str, Callable[[], Any]]:
    """Each supporting kernel's prepared call, warmed up (compiled, buffers touched)."""
    calls = {}
    for name in names:
        kernel = get_kernel(name)
        if kernel.supports(p) is None:
            call = kernel.prepare(p, x, w, b)
            call()
            calls[name] = call
    return calls


def measure_network(layers: list[tuple[ConvProblem, int]], plans: Path, passes: int,
                    sample_time: float, cooldown: float) -> list[LayerSamples]:
    ours = [k.name for k in kernels("cpu", kind="kernel")]
    out = []
    for p, repeat in layers:
        x, w, b = random_inputs(p)
        f, entry = tuned_plan(p, w, b, plans)
        calls = {PLAN: lambda f=f, x=x: f(x)}
        calls[PLAN]()
        calls.update(prepared_calls(p, x, w, b, [*ours, PEER]))
        errors = {c["kernel"]: c["error"].get(entry["metric"]) for c in entry["candidates"]}
        admissible = [k for k in ours if k in calls and errors.get(k) is not None
                      and float(errors[k]) <= entry["budget"]]
        samples = time_interleaved(calls, passes=passes, sample_time=sample_time,
                                   cooldown=cooldown, clock=make_clock("host"))
        layer = LayerSamples(p.name, str(p), repeat, f.kernel.name, entry["budget"],
                             admissible, samples)
        out.append(layer)
        print(f"  {p.name:16s} mb{p.mb}: plan={f.kernel.name:8s} " + "  ".join(
            f"{n} {statistics.median(s) * 1e3:.3f}" for n, s in samples.items()) + " ms",
            flush=True)
    return out


def network_summary(layers: list[LayerSamples], passes: int) -> dict[str, Any]:
    """Per-pass whole-network times and the ratios of the module docstring."""
    def total(pick: Callable[[LayerSamples], str | list[str] | None]) -> list[float] | None:
        """Per pass, the sum over layers of ``repeat x`` the picked kernel's sample; a list
        of kernels takes, per pass, the one fastest on the *other* passes (cross-fitted,
        so that the pick is not flattered by the samples it reports)."""
        per_pass = [0.0] * passes
        for layer in layers:
            name = pick(layer)
            if isinstance(name, list):
                fitted = crossfit_fastest({n: [[v] for v in layer.samples[n]] for n in name})
                if fitted is None:
                    return None
                samples = [r[0] for r in fitted[0]]
            elif name is None or name not in layer.samples:
                return None
            else:
                samples = layer.samples[name]
            for r, t in enumerate(samples):
                per_pass[r] += t * layer.repeat
        return per_pass

    def fastest(layer: LayerSamples, names: list[str]) -> list[str] | None:
        return [n for n in names if n in layer.samples] or None

    ours = [k.name for k in kernels("cpu", kind="kernel")]
    totals = {PLAN: total(lambda layer: PLAN), PEER: total(lambda layer: PEER),
              "best-of-convbench within budget": total(lambda layer: fastest(
                  layer, layer.admissible)),
              "best-of-convbench": total(lambda layer: fastest(layer, ours))}
    for name in ours:
        totals[name] = total(lambda layer, name=name: name)
    plan = totals[PLAN]
    ratios = {}
    for name in (PEER, "best-of-convbench within budget", "best-of-convbench"):
        if totals[name] is not None:
            per_pass = [t / p for t, p in zip(totals[name], plan, strict=True)]
            ratios[name] = {"median": statistics.median(per_pass), "min": min(per_pass),
                            "max": max(per_pass), "passes": per_pass}
    return {"totals_ms": {n: [t * 1e3 for t in v] for n, v in totals.items() if v},
            "ratios": ratios}


def measure_overhead(layers: list[tuple[str, ConvProblem]], passes: int, sample_time: float,
                     cooldown: float) -> list[dict[str, Any]]:
    """FFT and Winograd: prepared call, plan call, and prepare in every call."""
    out = []
    for suite, p in layers:
        x, w, b = random_inputs(p)
        for algo in ("fft", "winograd"):
            kernel = get_kernel(algo)
            if kernel.supports(p) is not None:
                continue
            call = kernel.prepare(p, x, w, b)
            f = convbench.plan(p.input_shape, w, b, algo=algo, **conv_arguments(p))
            calls = {"prepared": call, PLAN: lambda f=f, x=x: f(x),
                     "+prepare": lambda kernel=kernel, p=p, x=x, w=w, b=b:
                     kernel.prepare(p, x, w, b)()}
            for c in calls.values():
                c()
            samples = time_interleaved(calls, passes=passes, sample_time=sample_time,
                                       cooldown=cooldown, clock=make_clock("host"))
            ratio = statistics.median(a / c for a, c in zip(samples["prepared"],
                                                            samples[PLAN], strict=True))
            per_call = statistics.median(a / c for a, c in zip(samples["+prepare"],
                                                               samples[PLAN], strict=True))
            out.append({"suite": suite, "layer": p.name, "mb": p.mb, "kernel": algo,
                        "prepared_over_plan": ratio, "prepare_per_call_over_plan": per_call,
                        "medians_ms": {n: statistics.median(s) * 1e3
                                       for n, s in samples.items()}})
            print(f"  {algo:8s} {p.name:18s} mb{p.mb}: prepared/plan {ratio:.3f}  "
                  f"(+prepare)/plan {per_call:.2f}", flush=True)
    return out


def report(network: dict[int, dict[str, Any]], overhead: list[dict[str, Any]], passes: int,
           threads: int, plans: Path) -> str:
    lines = [f"Tuned plans (`convbench.plan`, choices from `{plans}`) against oneDNN and "
             f"best-of-convbench, {threads} threads, {passes} interleaved passes per layer; "
             "whole-network time per pass = sum over layers of the pass's sample x repeat. "
             "Ratios t_other / t_plan (> 1: the plan is faster): median over passes "
             "[min, max].\n",
             "| mb | plan ms | oneDNN ms | best-of-convbench within budget ms | "
             "oneDNN / plan | best within budget / plan | best-of-convbench (any error) / plan "
             "| plan >= 1.0x oneDNN | plan no slower than best (within noise) |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for mb, summary in network.items():
        t, r = summary["totals_ms"], summary["ratios"]

        def cell(name: str, r: dict = r) -> str:
            v = r.get(name)
            return f"{v['median']:.2f} [{v['min']:.2f}, {v['max']:.2f}]" if v else "—"

        best = r.get("best-of-convbench within budget")
        noise = (best["max"] - best["min"]) / 2 if best else math.nan
        vs_peer = r.get(PEER, {}).get("median", math.nan)
        lines.append(
            f"| {mb} | {statistics.median(t[PLAN]):.1f} | "
            f"{statistics.median(t[PEER]):.1f} | "
            f"{statistics.median(t['best-of-convbench within budget']):.1f} | {cell(PEER)} | "
            f"{cell('best-of-convbench within budget')} | {cell('best-of-convbench')} | "
            f"{'yes' if vs_peer >= 1.0 else '**no**'} | "
            f"{'yes' if best and best['median'] + noise >= 1.0 else '**no**'} "
            f"(noise ±{noise:.2f}) |")
    if overhead:
        lines += ["", "FFT and Winograd through `plan` against their prepared calls "
                  "(prepared / plan: >= 0.90 means the plan is within 10%); `+prepare`: the "
                  "weights transformed in every call.", "",
                  "| kernel | suite | layer | mb | prepared ms | plan ms | prepared / plan | "
                  "+prepare / plan |", "|---|---|---|---:|---:|---:|---:|---:|"]
        for o in overhead:
            m = o["medians_ms"]
            lines.append(f"| {o['kernel']} | {o['suite']} | {o['layer']} | {o['mb']} | "
                         f"{m['prepared']:.3f} | {m[PLAN]:.3f} | "
                         f"{o['prepared_over_plan']:.3f} | "
                         f"{o['prepare_per_call_over_plan']:.2f} |")
        lines += ["", "| kernel | layers | geometric mean prepared / plan | worst layer | "
                  "within 10% |", "|---|---:|---:|---:|---|"]
        for algo in ("fft", "winograd"):
            vals = [o["prepared_over_plan"] for o in overhead if o["kernel"] == algo]
            if vals:
                g = geomean(vals)
                lines.append(f"| {algo} | {len(vals)} | {g:.3f} | {min(vals):.3f} | "
                             f"{'yes' if g >= 0.9 else '**no**'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", required=True, help="plan cache written by convbench tune")
    parser.add_argument("--suite", default="resnet50")
    parser.add_argument("--batch", default="1,8", help="comma list of batch sizes (1,8)")
    parser.add_argument("--quick", action="store_true",
                        help=f"layers {', '.join(QUICK_LAYERS)} at the first batch size")
    parser.add_argument("--passes", type=int, default=7, help="interleaved passes (>= 5)")
    parser.add_argument("--sample-time", type=float, default=0.02)
    parser.add_argument("--cooldown", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-overhead", action="store_true",
                        help="skip the FFT/Winograd plan-vs-prepared measurement")
    parser.add_argument("--out", help="write OUT.md and OUT.json too")
    args = parser.parse_args()
    if args.passes < 5:
        parser.error("--passes must be >= 5")
    plans = Path(args.plans)
    if not plans.exists():
        parser.error(f"{plans} does not exist: run convbench tune --out {plans} first")
    os.environ[cache.PLANS_ENV] = str(plans)  # what convbench.plan(algo="auto") reads
    if get_kernel(PEER).supports(ConvProblem.parse("ic1ih3oc1kh1")) is not None:
        print("torch is not installed: pip install 'convbench[compare]'", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batch.split(",")][:1 if args.quick else None]
    suite = load_suite(args.suite)
    if args.quick:
        suite = [layer for layer in suite if layer.problem.name in QUICK_LAYERS]
    fives = [("googlenet", layer.problem) for layer in load_suite("googlenet")
             if layer.problem.kh == 5]
    network: dict[int, dict[str, Any]] = {}
    overhead: list[dict[str, Any]] = []
    per_layer: dict[int, list[LayerSamples]] = {}
    start = noise.snapshot()
    with pinned_threads(args.threads) as pinned:
        for mb in batches:
            print(f"whole network, mb{mb}:", flush=True)
            layers = [(layer.problem.with_(mb=mb), layer.repeat) for layer in suite]
            per_layer[mb] = measure_network(layers, plans, args.passes, args.sample_time,
                                            args.cooldown)
            network[mb] = network_summary(per_layer[mb], args.passes)
        if not args.no_overhead:
            print("plan overhead (FFT, Winograd):", flush=True)
            targets = [(args.suite, layer.problem) for layer in suite
                       if layer.problem.kh == 3] + ([] if args.quick else fives)
            for mb in batches:
                overhead += measure_overhead([(s, p.with_(mb=mb)) for s, p in targets],
                                             args.passes, args.sample_time, args.cooldown)
    machine = noise.noise(start, noise.snapshot())
    text = report(network, overhead, args.passes, pinned["threads"], plans)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        prov = provenance(repetitions={"passes": args.passes, "sample_time_s": args.sample_time,
                                       "cooldown_s": args.cooldown,
                                       "order": "interleaved in one process"},
                          noise=noise_verdict(machine))
        out.with_suffix(".md").write_text(with_markdown(text + "\n", prov))
        out.with_suffix(".json").write_text(json.dumps(with_json(
            {"threads": pinned["threads"], "passes": args.passes, "plans": str(plans),
             "network": network, "overhead": overhead,
             "layers": {mb: [asdict(s) for s in v] for mb, v in per_layer.items()}}, prov),
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
