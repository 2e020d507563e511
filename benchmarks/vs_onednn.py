"""convbench's CPU kernels against oneDNN (torch) at its best and the textbook NumPy im2col.

Every layer goes through :func:`convbench.measure.peers.compare_layer` in
each of ``--processes`` worker processes (:mod:`convbench.measure.peer_workers`):
all supporting convbench kernels and the peers are prepared once, warmed
up, then interleaved ``A B C A B C ...`` for ``--pairs`` passes per
process, same thread count, each sample after a cool-down and warm calls
(see that module for why). Kernels that cache a weight transform are also
timed as ``NAME+prepare``. A layer's ratio is the median over passes of
``t_peer / t_kernel`` (> 1: convbench is faster), its interval built over
the processes; the summary is the geometric mean over the layers of each
target group, pass by pass, with its 95% interval
(:func:`convbench.measure.peers.geomean_over_passes`).

The peer of every "x oneDNN" figure is ``onednn_best``: NCHW in and out, as
convbench's kernels get their operands, in the fastest of oneDNN's
configurations for the layer, chosen at its ``prepare`` on samples of its
own. ``onednn_cl`` (channels-last tensors end to end, another input layout)
is shown beside it, so a channels-last user reads the real gap; ``--peers``
adds ``onednn`` (the plain NCHW call, the peer of older results). A target
is ``met`` only when the lower end of its interval clears it; where only the
point estimate does, it is ``not shown``.

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
from convbench.measure.noise import noise, noise_line, snapshot
from convbench.measure.peer_workers import DEFAULT_PROCESSES, PeerWorkers
from convbench.measure.peers import (
    PER_CALL,
    IntervalRatio,
    LayerComparison,
    best_kernel,
    compare_layer,
    geomean,
    geomean_over_passes,
    whole_network,
)
from convbench.measure.roof import gemm_gflops
from convbench.measure.threads import pinned_threads
from convbench.problem import ConvProblem, normalize_direction
from convbench.problem.suites import load_suite
from convbench.registry import get_kernel, kernels
from convbench.store.provenance import markdown_block, noise_verdict, provenance

#: The peer of every "x oneDNN" figure and target.
PEER = "onednn_best"
#: oneDNN on channels-last tensors end to end: shown beside the peer.
CHANNELS_LAST = "onednn_cl"
#: Peers timed unless ``--peers`` says otherwise.
PEERS = (PEER, CHANNELS_LAST, "numpy_im2col")


def measure_layer(suite: str, p: ConvProblem, names: list[str], pairs: int,
                  sample_time: float, cooldown: float, *, peers: tuple[str, ...] = PEERS,
                  workers: PeerWorkers | None = None, per_call: bool = True
                  ) -> LayerComparison:
    """One layer, every kernel against every peer, in every worker process (see the module
    docstring; without ``workers``, in this process)."""
    if workers is None:
        return compare_layer(suite, p, names, peers, passes=pairs, sample_time=sample_time,
                             cooldown=cooldown, per_call=per_call)
    return workers.compare(suite, p, names, peers, passes=pairs, sample_time=sample_time,
                           cooldown=cooldown, per_call=per_call)


def met_text(g: IntervalRatio | tuple[float, float, float] | None, threshold: float,
             what: str = "") -> str:
    """``yes`` when the interval's lower end clears ``threshold``; ``not shown (point
    X.XX)`` when only the point estimate does; ``**no**`` otherwise; ``—`` for no value."""
    if g is None:
        return "—" + (f" ({what})" if what else "")
    value, lo = (g.value, g.lo) if isinstance(g, IntervalRatio) else (g[0], g[1])
    if lo >= threshold:
        return "yes"
    if value >= threshold:
        return f"not shown (point {value:.2f}, interval from {lo:.2f})"
    return "**no**"


def interval_text(g: IntervalRatio | None) -> str:
    return "—" if g is None else f"{g.value:.2f} [{g.lo:.2f}, {g.hi:.2f}]"


#: The Winograd tiles; a target over them takes each layer's cross-fitted fastest.
WINOGRAD_TILES = ["winograd", "winograd_4x4", "winograd_6x6"]


def _is_winograd_target(p: ConvProblem) -> bool:
    return (p.kh, p.kw, p.sh, p.sw, p.dil_h, p.dil_w) == (3, 3, 1, 1, 1, 1) and \
        min(p.ic, p.oc) >= 64


TARGETS = [
    # (label, kernel, peer, layer filter, threshold)
    ("winograd >= 0.9x oneDNN, 3x3 s1 C,K>=64 (ResNet-50, VGG-16)", "winograd", PEER,
     lambda r, p: r.suite in ("resnet50", "vgg16") and _is_winograd_target(p), 0.9),
    ("fastest Winograd tile per layer (cross-fitted), the same layers", WINOGRAD_TILES, PEER,
     lambda r, p: r.suite in ("resnet50", "vgg16") and _is_winograd_target(p), None),
    ("im2col >= 0.8x oneDNN, all ResNet-50", "im2col", PEER,
     lambda r, p: r.suite == "resnet50", 0.8),
    ("im2col >= 0.9x oneDNN, ResNet-50 1x1", "im2col", PEER,
     lambda r, p: r.suite == "resnet50" and (p.kh, p.kw) == (1, 1), 0.9),
    ("direct >= 0.35x oneDNN, all ResNet-50", "direct", PEER,
     lambda r, p: r.suite == "resnet50", 0.35),
    ("fft >= 0.5x oneDNN, 5x5 of GoogLeNet + AlexNet conv2", "fft", PEER,
     lambda r, p: r.suite in ("googlenet", "alexnet") and (p.kh, p.kw) == (5, 5), 0.5),
    # For reference (no threshold): the same layers with the weight transform in every call.
    ("winograd+prepare: filter transform in every call, winograd's layers above",
     "winograd" + PER_CALL, PEER,
     lambda r, p: r.suite in ("resnet50", "vgg16") and _is_winograd_target(p), None),
    ("fft+prepare: filter spectra in every call, fft's layers above", "fft" + PER_CALL, PEER,
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
#: kernel ``best`` is best-of-convbench over the whole network; a list of kernels takes
#: each layer's cross-fitted fastest.
BACKWARD_TARGETS = [
    ("best-of-convbench >= 0.8x oneDNN, whole ResNet-50, bwd_d", "bwd_d", "best", "resnet50",
     lambda p: True, 0.8),
    ("best-of-convbench >= 0.8x oneDNN, whole ResNet-50, bwd_w", "bwd_w", "best", "resnet50",
     lambda p: True, 0.8),
    ("winograd bwd_d >= 1.0x oneDNN, 3x3 s1 C,K>=64 of ResNet-50 (geometric mean)", "bwd_d",
     "winograd", "resnet50", _is_winograd_target, 1.0),
    ("fastest Winograd tile per layer (cross-fitted), bwd_d >= 1.0x oneDNN, the same layers",
     "bwd_d", WINOGRAD_TILES, "resnet50", _is_winograd_target, 1.0),
]


def timing_line(pairs: int, processes: int, threads: int) -> str:
    """How the samples were taken, for the head of every table."""
    where = (f"{pairs} interleaved passes in each of {processes} worker processes"
             if processes > 1 else f"{pairs} interleaved passes in one process")
    return (f"Ratios t_peer / t_kernel (> 1: convbench faster), median of {where}, "
            f"{threads} threads, a cool-down and {WARM_S * 1e3:.0f} ms of warm calls before "
            f"each sample. The peer is `{PEER}` (oneDNN with NCHW in and out in its fastest "
            "configuration for the layer, chosen at its prepare on samples of its own); "
            f"`{CHANNELS_LAST}` is oneDNN on channels-last tensors end to end, another input "
            "layout. Intervals: " + ("95%, Student-t over the processes' mean log ratios."
                                     if processes > 1 else
                                     "order statistics of the passes of one process "
                                     "(with 5 passes [min, max], 93.8%)."))


def peer_cells(r: LayerComparison) -> list[str]:
    """The peer's time, the configuration it chose, and onednn_cl's time relative to it."""
    best = r.medians_ms.get(PEER)
    config = ", ".join(dict.fromkeys(str(c.get(PEER, {}).get("configuration", "?"))
                                     for c in (r.chosen_by_process or [r.chosen])))
    cl = r.medians_ms.get(CHANNELS_LAST)
    return ["—" if best is None else f"{best:.3f}", config if best is not None else "—",
            "—" if best is None or cl is None else f"{best / cl:.2f}"]


PEER_HEADER = f" {PEER} ms | configuration | {PEER} / {CHANNELS_LAST} |"


def backward_report(results: list[LayerComparison], names: list[str], direction: str,
                    pairs: int, threads: int, processes: int = 1) -> str:
    """One direction's table: per layer each kernel's ratio to the peer and the fastest
    convbench kernel; per suite and batch the whole-network best-of-convbench ratio; the
    targets of that direction."""
    ran = [n for n in names if any(n in r.ratios for r in results)]
    computed = {"bwd_d": "dx", "bwd_w": "dw", "bwd_wb": "dw and db"}.get(direction, "y")
    lines = [f"### {direction}\n",
             timing_line(pairs, processes, threads) + f" oneDNN through torch's "
             f"convolution_backward ({computed} only).\n",
             "| suite | layer | mb | x |" + PEER_HEADER + " "
             + " | ".join(f"{n} x {PEER}" for n in ran) + " | fastest |",
             "|---|---|---:|---:|---:|---|---:|" + "---:|" * len(ran) + "---|"]
    for r in results:
        p = ConvProblem.parse(r.problem)
        cells = [f"{r.ratios[n][PEER]:.2f}" if PEER in r.ratios.get(n, {}) else "—"
                 for n in ran]
        lines.append(f"| {r.suite} | {r.name} | {p.mb} | {r.repeat} | "
                     + " | ".join(peer_cells(r)) + " | " + " | ".join(cells)
                     + f" | {best_kernel(r, ran) or '—'} |")
    lines += whole_network_lines(results, ran)
    targets = [t for t in BACKWARD_TARGETS if t[1] == direction]
    if targets:
        lines += ["", "| target | layers | ratio [95% CI] | met |", "|---|---:|---:|---|"]
    for label, _, kernel, suite, keep, threshold in targets:
        chosen = [r for r in results if r.suite == suite and keep(ConvProblem.parse(r.problem))]
        if kernel == "best":
            w = whole_network(chosen, ran, PEER)
            g = None if w is None else w[0]
        else:
            kernels_ = [k for k in kernel if k in ran] if isinstance(kernel, list) else kernel
            g = geomean_over_passes(chosen, kernels_, PEER) if kernels_ else None
        lines.append(f"| {label} | {len(chosen)} | {interval_text(g)} | "
                     f"{met_text(g, threshold, f'no {kernel} {direction} kernel ran')} |")
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
    """Per suite and batch, the peer's whole-network time over best-of-``names``'s (each
    layer's cross-fitted fastest), with the interval over the interleaved passes; the same
    against ``onednn_cl`` beside it, and against ``onednn`` where it was timed."""
    peers = [p for p in (PEER, CHANNELS_LAST, "onednn")
             if any(r.samples_ms.get(p) for r in results)]
    lines = ["", "| whole network | batch | best-of-convbench ms | "
             + " | ".join(f"{p} ms | {p} / best [95% CI]" for p in peers) + " |",
             "|---|---:|---:|" + "---:|---:|" * len(peers)]
    groups: dict[tuple[str, int], list[LayerComparison]] = {}
    for r in results:
        groups.setdefault((r.suite, ConvProblem.parse(r.problem).mb), []).append(r)
    for (suite, mb), rs in groups.items():
        cells, best_ms = [], None
        for peer in peers:
            w = whole_network(rs, names, peer)
            if w is None:
                cells.append("— | —")
                continue
            best_ms = w[2]
            cells.append(f"{w[1]:.1f} | {interval_text(w[0])}")
        lines.append(f"| {suite} | {mb} | {'—' if best_ms is None else f'{best_ms:.1f}'} | "
                     + " | ".join(cells) + " |")
    return lines


def report(results: list[LayerComparison], names: list[str], pairs: int, threads: int,
           roof_gflops: float | None = None, processes: int = 1) -> str:
    columns = with_per_call(results, names)  # each kernel, then its +prepare timing
    lines = [timing_line(pairs, processes, threads) + f" `NAME{PER_CALL}`: the kernel with "
             "its `prepare` (weight transform, buffers) in every call instead of once per "
             "weight tensor.\n",
             "| suite | layer | mb |" + PEER_HEADER + " "
             + " | ".join(f"{n} x {PEER}" for n in columns)
             + " | " + " | ".join(f"{n} x numpy_im2col" for n in names) + " |",
             "|---|---|---:|---:|---|---:|" + "---:|" * (len(columns) + len(names))]
    for r in results:
        p = ConvProblem.parse(r.problem)
        cells = [f"{r.ratios[n][PEER]:.2f}" if PEER in r.ratios.get(n, {})
                 else "—" for n in columns]
        cells += [f"{r.ratios[n]['numpy_im2col']:.2f}" if "numpy_im2col" in r.ratios.get(n, {})
                  else "—" for n in names]
        lines.append(f"| {r.suite} | {r.name} | {p.mb} | " + " | ".join(peer_cells(r)) + " | "
                     + " | ".join(cells) + " |")
    lines += ["", "| target | layers | geometric mean [95% CI] | met |", "|---|---:|---:|---|"]
    for label, kernel, peer, keep, threshold in TARGETS:
        chosen = [r for r in results if keep(r, ConvProblem.parse(r.problem))]
        kernels_ = [k for k in kernel if k in names] if isinstance(kernel, list) else kernel
        g = geomean_over_passes(chosen, kernels_, peer) if kernels_ else None
        counted = [r for r in chosen if r.samples_ms.get(peer) and
                   (isinstance(kernels_, list) or r.samples_ms.get(kernels_))]
        met = "(reference)" if threshold is None else met_text(g, threshold)
        lines.append(f"| {label} | {len(counted)} | {interval_text(g)} | {met} |")
    lines += whole_network_lines(results, names)
    lines += three_times_textbook(results, names, roof_gflops)
    lines.append("\nPer kernel, geometric mean over every layer it ran: " + ", ".join(
        f"{n} {geomean(ran):.2f}x {PEER}" for n in columns
        if (ran := [r.ratios[n][PEER] for r in results if PEER in r.ratios.get(n, {})])))
    failed = [f"{r.name} mb{ConvProblem.parse(r.problem).mb} {n}: {e}"
              for r in results for n, e in r.errors.items()]
    if failed:
        lines.append("\nLeft out after an error: " + "; ".join(failed))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset, under 2 minutes")
    parser.add_argument("--batch", default="1,8", help="comma list of batch sizes (1,8)")
    parser.add_argument("--pairs", type=int, default=3,
                        help="interleaved passes per worker process (3; >= 5 with one process)")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES,
                        help=f"worker processes each layer is measured in ({DEFAULT_PROCESSES}); "
                             "intervals are built over them")
    parser.add_argument("--sample-time", type=float, default=0.02,
                        help="seconds per sample, at least (0.02)")
    parser.add_argument("--cooldown", type=float, default=0.15,
                        help="pause before each sample so other thread pools go idle (0.15 s)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--algo", default="direct,im2col,fft,winograd")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma list of peers ({','.join(PEERS)}); add onednn for the plain "
                             "NCHW call that older results were measured against")
    parser.add_argument("--match", help="regex on layer names")
    parser.add_argument("--no-per-call", action="store_true",
                        help="do not also time weight-caching kernels with prepare in every call")
    parser.add_argument("--out", help="write OUT.json and OUT.md too")
    parser.add_argument("--direction", default="fwd",
                        help="comma list of directions: fwd, bwd_d, bwd_w, bwd_wb (fwd)")
    parser.add_argument("--suite", help="comma list of suites to keep (default: all planned)")
    parser.add_argument("--fft-min-filter", type=int, default=1,
                        help="time fft only on layers whose filter is at least this many taps "
                             "high and wide (default 1: every layer); the report says so")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be >= 1")
    if args.processes == 1 and args.pairs < 5:
        parser.error("--pairs must be >= 5 with one process")
    if args.pairs < 2:
        parser.error("--pairs must be >= 2")
    try:
        directions = list(dict.fromkeys(normalize_direction(d) for d in
                                        args.direction.split(",") if d))
    except ValueError as exc:
        parser.error(str(exc))
    names = [n for n in args.algo.split(",") if n]
    peers = tuple(dict.fromkeys([PEER, *(n for n in args.peers.split(",") if n)]))
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
    run = {"pairs": args.pairs, "processes": args.processes, "peers": list(peers),
           "start": snapshot(), "noise": None}
    with pinned_threads(args.threads) as pinned, \
            PeerWorkers(args.processes, args.threads) as workers:
        run["threads"] = pinned["threads"]
        run["roof_gflops"] = max(gemm_gflops(repeats=3).values())
        try:
            for direction, suite, p in work:
                here = [n for n in names if n != "fft" or min(p.kh, p.kw) >= args.fft_min_filter]
                r = measure_layer(suite, p, here, args.pairs, args.sample_time, args.cooldown,
                                  peers=peers, workers=workers, per_call=not args.no_per_call)
                r.repeat = repeats.get((suite, p.name), 1)
                results.append(r)
                print(f"{direction:6s} {suite:9s} {p.name:22s} mb{p.mb}: " + "  ".join(
                    f"{n} {r.ratios[n][PEER]:.2f}" for n in names
                    if PEER in r.ratios.get(n, {})), flush=True)
                if args.out:  # after every layer: an interrupted run keeps what it measured
                    save(args.out, results, names, run)
        except KeyboardInterrupt:
            interrupted = True
            print(f"\ninterrupted: reporting the {len(results)} of {len(work)} layers "
                  "measured", file=sys.stderr)
    run["noise"] = noise(run["start"], snapshot())
    if args.fft_min_filter > 1:
        NOTES.append(f"fft was timed only on layers with filters of at least "
                     f"{args.fft_min_filter}x{args.fft_min_filter} (--fft-min-filter); "
                     "best-of-convbench is over the kernels timed on each layer.")
    text = full_report(results, names, run)
    print("\n" + text)
    if args.out:
        save(args.out, results, names, run)
    return 130 if interrupted else 0


def direction_of(r: LayerComparison) -> str:
    return ConvProblem.parse(r.problem).dir


def full_report(results: list[LayerComparison], names: list[str], run: dict) -> str:
    """The forward report (:func:`report`), one section per backward direction, the
    schedules chosen and the machine's noise line."""
    pairs, threads, processes = run["pairs"], run["threads"], run.get("processes", 1)
    forward = [r for r in results if direction_of(r) == "fwd"]
    backward = [r for r in results if direction_of(r) != "fwd"]
    parts = [report(forward, names, pairs, threads, run.get("roof_gflops"), processes)] \
        if forward or not results else []
    for d in dict.fromkeys(direction_of(r) for r in backward):
        parts.append(backward_report([r for r in backward if direction_of(r) == d], names, d,
                                     pairs, threads, processes))
    parts += training_step_lines(results, names)
    if run.get("noise"):
        parts.append(noise_line(run["noise"]))
    return "\n\n".join(parts + chosen_lines(results, names) + NOTES)


def training_step_lines(results: list[LayerComparison], names: list[str]) -> list[str]:
    """Per suite and batch where fwd, bwd_d and bwd_w were all measured: the training
    step's whole-network ratio (fwd + bwd_w of every layer, bwd_d of every layer but the
    first, whose dx nothing upstream needs), pass by pass, each layer and direction's
    best-of-convbench cross-fitted, against each oneDNN peer measured."""
    groups: dict[tuple[str, int], list[LayerComparison]] = {}
    for r in results:
        groups.setdefault((r.suite, ConvProblem.parse(r.problem).mb), []).append(r)
    lines = []
    for (suite, mb), rs in groups.items():
        by_dir = {d: [r for r in rs if direction_of(r) == d] for d in ("fwd", "bwd_d", "bwd_w")}
        if not all(by_dir.values()):
            continue
        first = by_dir["fwd"][0].name
        step = by_dir["fwd"] + by_dir["bwd_w"] + [r for r in by_dir["bwd_d"] if r.name != first]
        cells = []
        for peer in (PEER, CHANNELS_LAST, "onednn"):
            w = whole_network(step, names, peer)
            if w is not None:
                cells.append(f"| {suite} | {mb} | {peer} | {w[1]:.1f} | {w[2]:.1f} | "
                             f"{interval_text(w[0])} |")
        if cells:
            lines.append(f"### Training step (fwd + bwd_d + bwd_w; no bwd_d for {first})\n\n"
                         "| suite | batch | peer | peer ms | best-of-convbench ms | "
                         "peer / best [95% CI] |\n|---|---:|---|---:|---:|---:|\n"
                         + "\n".join(cells))
    return lines


def chosen_lines(results: list[LayerComparison], names: list[str]) -> list[str]:
    """A table of the schedules each kernel's ``prepare`` chose by timing, where any did."""
    ran = [n for n in names if any("schedule" in r.chosen.get(n, {}) for r in results)]
    if not ran:
        return []
    lines = ["### Schedules chosen at prepare\n",
             "Each timed schedule choice (blocks and GEMMs on BLAS's threads, on the team, "
             "or per-thread blocks), as the first worker process's timed calls ran it.\n",
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


def save(out: str, results: list[LayerComparison], names: list[str], run: dict) -> None:
    """Write ``OUT.md`` (the report) and ``OUT.json`` (every measurement), each with its
    provenance."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = provenance(
        repetitions={"passes_per_process": run["pairs"], "processes": run.get("processes", 1),
                     "sample_s_at_least": 0.02, "warm_s": WARM_S},
        noise=noise_verdict(run.get("noise"), "the run was interrupted before its closing "
                                              "calibration"),
        command=[sys.executable, *sys.argv])
    text = full_report(results, names, run)
    path.with_suffix(".md").write_text(markdown_block(prov) + "\n" + text + "\n")
    path.with_suffix(".json").write_text(json.dumps(
        {"provenance": prov, "threads": run["threads"], "pairs": run["pairs"],
         "processes": run.get("processes", 1), "peers": run.get("peers"), "kernels": names,
         "command": sys.argv, "registered": [k.name for k in kernels("cpu")],
         "gemm_roof_gflops": run.get("roof_gflops"), "noise": run.get("noise"),
         "layers": [r.__dict__ for r in results]}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
