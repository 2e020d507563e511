"""convbench's CPU kernels against oneDNN (torch) and the textbook NumPy im2col, interleaved.

Every layer goes through :func:`convbench.measure.peers.compare_layer`: all
supporting convbench kernels and the two peers are prepared once, warmed
up, then interleaved ``A B C A B C ...`` for ``--pairs`` passes in this
process, same thread count, each sample after a cool-down and one untimed
call (see that module for why). Kernels that cache a weight transform are
also timed as ``NAME+prepare``. A layer's ratio is the median over passes of
``t_peer / t_kernel`` (> 1: convbench is faster); the summary is the
geometric mean over the layers of each target group, with its 95% interval.

With ``--direction`` the same comparison runs per direction: each layer's
``bwd_d`` (against torch's ``convolution_backward`` for ``dx``) and ``bwd_w``
(for ``dw``), and the report gives, per direction, suite and batch, the
whole-network ratio of torch to best-of-convbench (the fastest convbench
kernel of each layer), summed pass by pass so that its interval comes from
the interleaved passes (:func:`convbench.measure.peers.whole_network_ratio`).

Usage::

    python benchmarks/vs_onednn.py            # ResNet-50 + VGG-16 at batch 1 and 8, + 5x5 layers
    python benchmarks/vs_onednn.py --quick    # a subset, under 2 minutes
    python benchmarks/vs_onednn.py --out results/cpu/vs_onednn   # also .json and .md
    python benchmarks/vs_onednn.py --direction fwd,bwd_d,bwd_w   # every direction
    python benchmarks/vs_onednn.py --direction bwd_d,bwd_w --suite resnet50 --batch 8
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from convbench.measure.cooldown import WARM_S
from convbench.measure.peers import (
    PER_CALL,
    LayerComparison,
    best_kernel,
    compare_layer,
    geomean,
    geomean_interval,
    whole_network_ratio,
)
from convbench.measure.roof import gemm_gflops
from convbench.measure.threads import pinned_threads
from convbench.problem import ConvProblem, normalize_direction
from convbench.problem.suites import load_suite
from convbench.registry import get_kernel, kernels

PEERS = ("onednn", "numpy_im2col")


def measure_layer(suite: str, p: ConvProblem, names: list[str], pairs: int,
                  sample_time: float, cooldown: float) -> LayerComparison:
    """One layer, every kernel against both peers (see the module docstring)."""
    return compare_layer(suite, p, names, PEERS, passes=pairs, sample_time=sample_time,
                         cooldown=cooldown)


def _is_winograd_target(p: ConvProblem) -> bool:
    return (p.kh, p.kw, p.sh, p.sw, p.dil_h, p.dil_w) == (3, 3, 1, 1, 1, 1) and \
        min(p.ic, p.oc) >= 64


TARGETS = [
    # (label, kernel, peer, layer filter, threshold)
    ("winograd >= 0.9x oneDNN, 3x3 s1 C,K>=64 (ResNet-50, VGG-16)", "winograd", "onednn",
     lambda r, p: r.suite in ("resnet50", "vgg16") and _is_winograd_target(p), 0.9),
    ("im2col >= 0.8x oneDNN, all ResNet-50", "im2col", "onednn",
     lambda r, p: r.suite == "resnet50", 0.8),
    ("im2col >= 0.9x oneDNN, ResNet-50 1x1", "im2col", "onednn",
     lambda r, p: r.suite == "resnet50" and (p.kh, p.kw) == (1, 1), 0.9),
    ("direct >= 0.35x oneDNN, all ResNet-50", "direct", "onednn",
     lambda r, p: r.suite == "resnet50", 0.35),
    ("fft >= 0.5x oneDNN, 5x5 of GoogLeNet + AlexNet conv2", "fft", "onednn",
     lambda r, p: r.suite in ("googlenet", "alexnet") and (p.kh, p.kw) == (5, 5), 0.5),
    # For reference (no threshold): the same layers with the weight transform in every call.
    ("winograd+prepare: filter transform in every call, winograd's layers above",
     "winograd" + PER_CALL, "onednn",
     lambda r, p: r.suite in ("resnet50", "vgg16") and _is_winograd_target(p), None),
    ("fft+prepare: filter spectra in every call, fft's layers above", "fft" + PER_CALL, "onednn",
     lambda r, p: r.suite in ("googlenet", "alexnet") and (p.kh, p.kw) == (5, 5), None),
]


def with_per_call(results: list[LayerComparison], names: list[str]) -> list[str]:
    """``names`` plus the ``+prepare`` variants that were measured, each after its kernel."""
    measured = {n for r in results for n in r.ratios}
    return [v for n in names for v in (n, n + PER_CALL) if v == n or v in measured]


def plan_layers(quick: bool, batches: list[int]) -> list[tuple[str, ConvProblem]]:
    five = ([x.problem for x in load_suite("googlenet") if x.problem.kh == 5]
            + [x.problem for x in load_suite("alexnet") if x.problem.name == "conv2"])
    if quick:
        pick = {"res2_branch2b", "res3_branch2b", "res4_branch2c", "res5_branch2a",
                "res4a_branch1", "conv1", "conv4_2"}
        layers = [("resnet50", x.problem.with_(mb=1)) for x in load_suite("resnet50")
                  if x.problem.name in pick]
        layers += [("vgg16", x.problem.with_(mb=1)) for x in load_suite("vgg16")
                   if x.problem.name in pick]
        return layers + [("googlenet" if p.name != "conv2" else "alexnet", p.with_(mb=1))
                         for p in five[2:4] + five[-1:]]
    layers = []
    for batch in batches:
        layers += [("resnet50", x.problem.with_(mb=batch)) for x in load_suite("resnet50")]
        layers += [("vgg16", x.problem.with_(mb=batch)) for x in load_suite("vgg16")]
        layers += [("googlenet" if p.name != "conv2" else "alexnet", p.with_(mb=batch))
                   for p in five]
    return layers


def in_direction(layers: list[tuple[str, ConvProblem]], direction: str
                 ) -> list[tuple[str, ConvProblem]]:
    """The layers in ``direction`` (bwd_wb gives each a bias)."""
    if direction == "fwd":
        return layers
    return [(s, replace(p, dir=direction, bias=direction == "bwd_wb")) for s, p in layers]


def layer_repeats() -> dict[tuple[str, str], int]:
    """(suite, layer name) -> how often the network repeats it."""
    return {(suite, x.problem.name): x.repeat for suite in ("resnet50", "vgg16", "googlenet",
                                                            "alexnet")
            for x in load_suite(suite)}


#: Backward targets: (label, direction, kernel, suite, layer filter, threshold). The
#: kernel ``best`` is best-of-convbench over the whole network.
BACKWARD_TARGETS = [
    ("best-of-convbench >= 0.8x oneDNN, whole ResNet-50, bwd_d", "bwd_d", "best", "resnet50",
     lambda p: True, 0.8),
    ("best-of-convbench >= 0.8x oneDNN, whole ResNet-50, bwd_w", "bwd_w", "best", "resnet50",
     lambda p: True, 0.8),
    ("winograd bwd_d >= 1.0x oneDNN, 3x3 s1 C,K>=64 of ResNet-50 (geometric mean)", "bwd_d",
     "winograd", "resnet50", _is_winograd_target, 1.0),
    ("fastest Winograd tile per layer, bwd_d >= 1.0x oneDNN, the same layers", "bwd_d",
     "fastest-winograd", "resnet50", _is_winograd_target, 1.0),
]


def backward_report(results: list[LayerComparison], names: list[str], direction: str,
                    pairs: int, threads: int) -> str:
    """One direction's table: per layer each kernel's ratio to oneDNN and the fastest
    convbench kernel; per suite and batch the whole-network best-of-convbench ratio; the
    targets of that direction."""
    ran = [n for n in names if any(n in r.ratios for r in results)]
    computed = {"bwd_d": "dx", "bwd_w": "dw", "bwd_wb": "dw and db"}.get(direction, "y")
    lines = [f"### {direction}\n",
             f"Ratios t_onednn / t_kernel (> 1: convbench faster), median of {pairs} "
             f"interleaved passes, {threads} threads, a cool-down and "
             f"{WARM_S * 1e3:.0f} ms of warm calls before each sample; oneDNN through "
             f"torch's convolution_backward ({computed} only).\n",
             "| suite | layer | mb | x | onednn ms | " + " | ".join(f"{n} x onednn" for n in ran)
             + " | fastest |",
             "|---|---|---:|---:|---:|" + "---:|" * len(ran) + "---|"]
    for r in results:
        p = ConvProblem.parse(r.problem)
        cells = [r.ratios[n]["onednn"].__format__(".2f") if "onednn" in r.ratios.get(n, {})
                 else "—" for n in ran]
        onednn = r.medians_ms.get("onednn")
        lines.append(f"| {r.suite} | {r.name} | {p.mb} | {r.repeat} | "
                     f"{'—' if onednn is None else f'{onednn:.3f}'} | " + " | ".join(cells)
                     + f" | {best_kernel(r, ran) or '—'} |")
    lines += whole_network_lines(results, ran)
    targets = [t for t in BACKWARD_TARGETS if t[1] == direction]
    if targets:
        lines += ["", "| target | layers | ratio [95% CI] | met |", "|---|---:|---:|---|"]
    for label, _, kernel, suite, keep, threshold in targets:
        chosen = [r for r in results if r.suite == suite and keep(ConvProblem.parse(r.problem))]
        if kernel == "best":
            w = whole_network_ratio(chosen, ran, "onednn")
            g = None if w is None else w[:3]
        elif kernel == "fastest-winograd":  # per layer, the tile with the highest median ratio
            tiles = [n for n in ran if n.startswith("winograd")]
            picks = [(r, max((n for n in tiles if "onednn" in r.ratios.get(n, {})),
                             key=lambda n, r=r: r.ratios[n]["onednn"], default=None))
                     for r in chosen]
            picks = [(r, n) for r, n in picks if n is not None]
            chosen = [r for r, _ in picks]
            g = geomean_interval([r.ratios[n]["onednn"] for r, n in picks],
                                 [r.intervals[n]["onednn"] for r, n in picks])
        else:
            chosen = [r for r in chosen if "onednn" in r.ratios.get(kernel, {})]
            g = geomean_interval([r.ratios[kernel]["onednn"] for r in chosen],
                                 [r.intervals[kernel]["onednn"] for r in chosen])
        text = "—" if g is None else f"{g[0]:.2f} [{g[1]:.2f}, {g[2]:.2f}]"
        met = ("— (no " + kernel + f" {direction} kernel ran)") if g is None else \
            ("yes" if g[0] >= threshold else "**no**")
        lines.append(f"| {label} | {len(chosen)} | {text} | {met} |")
    failed = [f"{r.name} mb{ConvProblem.parse(r.problem).mb} {n}: {e}"
              for r in results for n, e in r.errors.items()]
    if failed:
        lines.append("\nLeft out after an error: " + "; ".join(failed))
    return "\n".join(lines)


def three_times_textbook(results: list[LayerComparison], names: list[str],
                         roof_gflops: float | None) -> list[str]:
    """The "every kernel >= 3x numpy_im2col" row, and where that is beyond the machine.

    A kernel that does the direct convolution's multiply-adds (direct, im2col)
    cannot run faster than ``flops / roof``, so where the textbook code already
    runs above a third of the GEMM roof, 3x is out of reach for it.
    """
    worst = {n: min((r.ratios[n]["numpy_im2col"] for r in results
                     if "numpy_im2col" in r.ratios.get(n, {})), default=None) for n in names}
    counts = {n: (sum(r.ratios[n]["numpy_im2col"] >= 3 for r in results
                      if "numpy_im2col" in r.ratios.get(n, {})),
                  sum("numpy_im2col" in r.ratios.get(n, {}) for r in results)) for n in names}
    lines = ["| every kernel >= 3x numpy_im2col: worst layer (layers >= 3x) | | "
             + ", ".join(f"{n} {v:.2f} ({counts[n][0]}/{counts[n][1]})"
                         for n, v in worst.items() if v is not None)
             + " | " + ("yes" if all(v is None or v >= 3 for v in worst.values())
                        else "**no**") + " |"]
    if roof_gflops:
        textbook = {(r.suite, r.name, r.problem): ConvProblem.parse(r.problem).flops
                    / (r.medians_ms["numpy_im2col"] * 1e-3) / 1e9
                    for r in results if "numpy_im2col" in r.medians_ms}
        beyond = [k for k, gf in textbook.items() if 3 * gf > roof_gflops]
        lines.append(
            f"\nnumpy_im2col ran at {min(textbook.values(), default=0):.0f}-"
            f"{max(textbook.values(), default=0):.0f} GFLOP/s; this machine's fp32 GEMM roof, "
            f"measured before the run, is {roof_gflops:.0f} GFLOP/s. On {len(beyond)} of "
            f"{len(textbook)} layers 3x numpy_im2col is above that roof, out of reach for "
            "any kernel that does the direct convolution's multiply-adds"
            + (": " + ", ".join(f"{name} mb{ConvProblem.parse(d).mb}"
                                for _, name, d in beyond) if beyond else "") + ".")
    return lines


def whole_network_lines(results: list[LayerComparison], names: list[str]) -> list[str]:
    """Per suite and batch, oneDNN's whole-network time over best-of-``names``'s, with the
    interval over the interleaved passes (each layer times its repeat count)."""
    lines = ["", "| whole network | batch | onednn ms | best-of-convbench ms | "
                 "onednn / best [95% CI] |", "|---|---:|---:|---:|---:|"]
    groups: dict[tuple[str, int], list[LayerComparison]] = {}
    for r in results:
        groups.setdefault((r.suite, ConvProblem.parse(r.problem).mb), []).append(r)
    for (suite, mb), rs in groups.items():
        w = whole_network_ratio(rs, names, "onednn")
        lines.append(f"| {suite} | {mb} | " + ("— | — | — |" if w is None else
                     f"{w[3]:.1f} | {w[4]:.1f} | {w[0]:.2f} [{w[1]:.2f}, {w[2]:.2f}] |"))
    return lines


def report(results: list[LayerComparison], names: list[str], pairs: int, threads: int,
           roof_gflops: float | None = None) -> str:
    columns = with_per_call(results, names)  # each kernel, then its +prepare timing
    lines = [f"Ratios t_peer / t_kernel (> 1: convbench faster), median of {pairs} interleaved "
             f"passes, {threads} threads, a cool-down and {WARM_S * 1e3:.0f} ms of warm calls "
             "before each sample. "
             f"`NAME{PER_CALL}`: the kernel with its `prepare` (weight transform, buffers) in "
             "every call instead of once per weight tensor.\n",
             "| suite | layer | mb | " + " | ".join(f"{n} x onednn" for n in columns)
             + " | " + " | ".join(f"{n} x numpy_im2col" for n in names) + " |",
             "|---|---|---:|" + "---:|" * (len(columns) + len(names))]
    for r in results:
        p = ConvProblem.parse(r.problem)
        cells = [f"{r.ratios[n]['onednn']:.2f}" if "onednn" in r.ratios.get(n, {})
                 else "—" for n in columns]
        cells += [f"{r.ratios[n]['numpy_im2col']:.2f}" if "numpy_im2col" in r.ratios.get(n, {})
                  else "—" for n in names]
        lines.append(f"| {r.suite} | {r.name} | {p.mb} | " + " | ".join(cells) + " |")
    lines += ["", "| target | layers | geometric mean [95% CI] | met |", "|---|---:|---:|---|"]
    for label, kernel, peer, keep, threshold in TARGETS:
        chosen = [r for r in results
                  if peer in r.ratios.get(kernel, {}) and keep(r, ConvProblem.parse(r.problem))]
        values = [r.ratios[kernel][peer] for r in chosen]
        intervals = [r.intervals.get(kernel, {}).get(peer) for r in chosen]
        g = (geomean_interval(values, intervals) if None not in intervals else
             (geomean(values), None, None) if values else None)
        if threshold is None:
            met = "(reference)"
        else:
            met = "—" if g is None else ("yes" if g[0] >= threshold else "**no**")
        text = "—" if g is None else f"{g[0]:.2f}" + (f" [{g[1]:.2f}, {g[2]:.2f}]"
                                                       if g[1] is not None else "")
        lines.append(f"| {label} | {len(chosen)} | {text} | {met} |")
    lines += whole_network_lines(results, names)
    lines += three_times_textbook(results, names, roof_gflops)
    lines.append("\nPer kernel, geometric mean over every layer it ran: " + ", ".join(
        f"{n} {geomean(ran):.2f}x onednn" for n in columns
        if (ran := [r.ratios[n]["onednn"] for r in results if "onednn" in r.ratios.get(n, {})])))
    failed = [f"{r.name} mb{ConvProblem.parse(r.problem).mb} {n}: {e}"
              for r in results for n, e in r.errors.items()]
    if failed:
        lines.append("\nLeft out after an error: " + "; ".join(failed))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset, under 2 minutes")
    parser.add_argument("--batch", default="1,8", help="comma list of batch sizes (1,8)")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved passes (>= 5)")
    parser.add_argument("--sample-time", type=float, default=0.02,
                        help="seconds per sample, at least (0.02)")
    parser.add_argument("--cooldown", type=float, default=0.15,
                        help="pause before each sample so other thread pools go idle (0.15 s)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--algo", default="direct,im2col,fft,winograd")
    parser.add_argument("--match", help="regex on layer names")
    parser.add_argument("--out", help="write OUT.json and OUT.md too")
    parser.add_argument("--direction", default="fwd",
                        help="comma list of directions: fwd, bwd_d, bwd_w, bwd_wb (fwd)")
    parser.add_argument("--suite", help="comma list of suites to keep (default: all planned)")
    parser.add_argument("--fft-min-filter", type=int, default=1,
                        help="time fft only on layers whose filter is at least this many taps "
                             "high and wide (default 1: every layer); the report says so")
    args = parser.parse_args()
    if args.pairs < 5:
        parser.error("--pairs must be >= 5")
    try:
        directions = list(dict.fromkeys(normalize_direction(d) for d in
                                        args.direction.split(",") if d))
    except ValueError as exc:
        parser.error(str(exc))
    names = [n for n in args.algo.split(",") if n]
    if get_kernel("onednn").supports(ConvProblem.parse("ic1ih3oc1kh1")) is not None:
        print("torch is not installed: pip install 'convbench[compare]'", file=sys.stderr)
        return 2
    layers = plan_layers(args.quick, [int(b) for b in args.batch.split(",")])
    if args.match:
        import re  # noqa: PLC0415

        layers = [(s, p) for s, p in layers if re.search(args.match, p.name)]
    if args.suite:
        keep = set(args.suite.split(","))
        layers = [(s, p) for s, p in layers if s in keep]
    repeats = layer_repeats()
    work = [(d, s, p) for d in directions for s, p in in_direction(layers, d)]
    results: list[LayerComparison] = []
    interrupted = False
    with pinned_threads(args.threads) as pinned:
        roof_gflops = max(gemm_gflops(repeats=3).values())
        try:
            for direction, suite, p in work:
                here = [n for n in names if n != "fft" or min(p.kh, p.kw) >= args.fft_min_filter]
                r = measure_layer(suite, p, here, args.pairs, args.sample_time, args.cooldown)
                r.repeat = repeats.get((suite, p.name), 1)
                results.append(r)
                print(f"{direction:6s} {suite:9s} {p.name:22s} mb{p.mb}: " + "  ".join(
                    f"{n} {r.ratios[n]['onednn']:.2f}" for n in names if n in r.ratios),
                    flush=True)
                if args.out:  # after every layer: an interrupted run keeps what it measured
                    save(args.out, results, names, args.pairs, pinned["threads"], roof_gflops)
        except KeyboardInterrupt:
            interrupted = True
            print(f"\ninterrupted: reporting the {len(results)} of {len(work)} layers "
                  "measured", file=sys.stderr)
    if args.fft_min_filter > 1:
        NOTES.append(f"fft was timed only on layers with filters of at least "
                     f"{args.fft_min_filter}x{args.fft_min_filter} (--fft-min-filter); "
                     "best-of-convbench is over the kernels timed on each layer.")
    text = full_report(results, names, args.pairs, pinned["threads"], roof_gflops)
    print("\n" + text)
    if args.out:
        save(args.out, results, names, args.pairs, pinned["threads"], roof_gflops)
    return 130 if interrupted else 0


def direction_of(r: LayerComparison) -> str:
    return ConvProblem.parse(r.problem).dir


def full_report(results: list[LayerComparison], names: list[str], pairs: int, threads: int,
                roof_gflops: float | None) -> str:
    """The forward report (:func:`report`) and one section per backward direction."""
    forward = [r for r in results if direction_of(r) == "fwd"]
    backward = [r for r in results if direction_of(r) != "fwd"]
    parts = [report(forward, names, pairs, threads, roof_gflops)] if forward or not results \
        else []
    for d in dict.fromkeys(direction_of(r) for r in backward):
        parts.append(backward_report([r for r in backward if direction_of(r) == d], names, d,
                                     pairs, threads))
    return "\n\n".join(parts + chosen_lines(results, names) + NOTES)


def chosen_lines(results: list[LayerComparison], names: list[str]) -> list[str]:
    """A table of the schedules each kernel's ``prepare`` chose by timing, where any did."""
    ran = [n for n in names if any("schedule" in r.chosen.get(n, {}) for r in results)]
    if not ran:
        return []
    lines = ["### Schedules chosen at prepare\n",
             "Each timed schedule choice (blocks and GEMMs on BLAS's threads, on the team, "
             "or per-thread blocks), as the timed calls ran it.\n",
             "| dir | suite | layer | mb | " + " | ".join(ran) + " |",
             "|---|---|---|---:|" + "---|" * len(ran)]
    for r in results:
        if any("schedule" in r.chosen.get(n, {}) for n in ran):
            cells = [r.chosen.get(n, {}).get("schedule", "—") for n in ran]
            lines.append(f"| {direction_of(r)} | {r.suite} | {r.name} | "
                         f"{ConvProblem.parse(r.problem).mb} | " + " | ".join(cells) + " |")
    return ["\n".join(lines)]


#: What the run's options left out, said under the report.
NOTES: list[str] = []


def save(out: str, results: list[LayerComparison], names: list[str], pairs: int, threads: int,
         roof_gflops: float) -> None:
    """Write ``OUT.md`` (the report) and ``OUT.json`` (every measurement)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".md").write_text(
        full_report(results, names, pairs, threads, roof_gflops) + "\n")
    path.with_suffix(".json").write_text(json.dumps(
        {"threads": threads, "pairs": pairs, "kernels": names, "command": sys.argv,
         "registered": [k.name for k in kernels("cpu")], "gemm_roof_gflops": roof_gflops,
         "layers": [r.__dict__ for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
