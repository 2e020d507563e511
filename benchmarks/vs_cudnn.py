"""convbench's GPU kernels against cuDNN (frontend heuristic, best plan, and torch), interleaved.

For ResNet-50 and VGG-16 at batch 32 and 1, in the math modes fp32 (strict),
fp16 (fp16 data, fp32 accumulation) and tf32 (fp64 on request), every layer
goes through :func:`convbench.measure.peers.compare_layer` with
``backend="gpu"``: all supporting convbench GPU kernels and the peers
``cudnn``, ``cudnn_best`` and ``torch_cudnn`` are prepared once and warmed up,
then interleaved ``A B C A B C ...`` for ``--pairs`` passes in this process,
each sample timed with CUDA events. A layer's ratio is the median over passes
of ``t_peer / t_kernel`` (> 1: convbench is faster); summaries are geometric
means over layers, and whole-network times are sums of per-layer medians
times the layer's repeat count. ``best`` is, per layer, the fastest
convbench kernel; "best cuDNN" is ``cudnn_best``, the fastest admissible
plan in the same math mode.

Each kernel's ``rel_l2`` against the float64 reference is measured on the
batch-1 layers (the reference of a batch-32 layer costs more than the whole
comparison; the error per output does not depend on the batch).

``--direction fwd,bwd_d,bwd_w`` (default ``fwd``) measures each layer in
each listed direction: the kernels' backward passes against cuDNN's dgrad and
wgrad engines (``cudnn_best`` is then the fastest admissible conv_dgrad or
conv_wgrad plan), with a table, whole-network times and a target row per
direction.

Layers run in the order of the targets (batch 32 fp32, then fp16, tf32, then
batch 1), and ``--budget`` seconds stop the run between layers: a device call
has a time limit, and what was measured is always reported. Ctrl-C and a
kernel that raises do the same: the layers measured stay, the kernel is named.

Usage::

    python benchmarks/vs_cudnn.py                       # the full run
    python benchmarks/vs_cudnn.py --quick               # a subset, under 2 minutes
    python benchmarks/vs_cudnn.py --out results/gpu/vs_cudnn   # also .json and .md
    python benchmarks/vs_cudnn.py --quick --batch 32 --math fp32 --direction fwd,bwd_d,bwd_w
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from convbench.measure import noise
from convbench.measure.peers import LayerComparison, compare_layer, geomean
from convbench.problem import ConvProblem
from convbench.problem.conv_problem import MATH_MODES
from convbench.problem.suites import load_suite
from convbench.store.provenance import (
    noise_verdict,
    pending_noise,
    provenance,
    with_json,
    with_markdown,
)

#: The directions a run may list; bwd_wb is bwd_w with the bias gradient.
DIRECTIONS = ("fwd", "bwd_d", "bwd_w", "bwd_wb")

PEERS = ("cudnn", "cudnn_best", "torch_cudnn")
BEST_PEER = "cudnn_best"
KERNELS = ("direct", "im2col", "fft", "winograd")
#: The rel_l2 bound of the fp16 mode (fp16 data, fp32 accumulation).
FP16_REL_L2 = 2e-3
QUICK_LAYERS = {"resnet50": ("res2_branch2b", "res3_branch2b", "res4_branch2c", "res5_branch2a",
                             "res4a_branch1"),
                "vgg16": ("conv3_2",)}


@dataclass
class Measured:
    """One layer in one math mode and batch: the comparison and what it needs for totals."""

    suite: str
    math: str
    mb: int
    repeat: int
    comparison: LayerComparison
    seconds: float = 0.0
    dir: str = "fwd"

    @property
    def problem(self) -> ConvProblem:
        return ConvProblem.parse(self.comparison.problem)


def with_math(p: ConvProblem, math: str, mb: int, direction: str = "fwd") -> ConvProblem:
    """``p`` at batch ``mb`` in math mode ``math`` and ``direction`` (bwd_wb: with bias)."""
    dtype, fpmath = MATH_MODES[math]
    p = p.with_(mb=mb, dtype=dtype, fpmath=fpmath)
    if direction == "fwd":
        return p
    return replace(p, dir=direction, bias=direction == "bwd_wb")


def plan_layers(quick: bool, batches: list[int], maths: list[str],
                directions: tuple[str, ...] = ("fwd",)) -> list[tuple[str, int, ConvProblem]]:
    """(suite, repeat, problem) in measuring order: batch, math mode, direction, then layer."""
    out = []
    for mb in batches:
        for math in maths:
            for direction in directions:
                for suite in ("resnet50", "vgg16"):
                    for layer in load_suite(suite):
                        if quick and layer.problem.name not in QUICK_LAYERS[suite]:
                            continue
                        out.append((suite, layer.repeat,
                                    with_math(layer.problem, math, mb, direction)))
    return out


def best_of(r: LayerComparison, kernels: list[str]) -> tuple[str, float] | None:
    """The fastest convbench kernel on a layer and its time (ms)."""
    times = [(n, r.medians_ms[n]) for n in kernels if n in r.medians_ms]
    return min(times, key=lambda t: t[1]) if times else None


def is_winograd_target(p: ConvProblem) -> bool:
    return (p.kh, p.kw, p.sh, p.sw, p.dil_h, p.dil_w) == (3, 3, 1, 1, 1, 1) and \
        min(p.ic, p.oc) >= 64


def network_times(results: list[Measured], suite: str, math: str, mb: int,
                  kernels: list[str], direction: str = "fwd") -> dict[str, float] | None:
    """Whole-network ms per kernel, peer and ``best``, over the layers every one of them ran."""
    rows = [m for m in results if (m.suite, m.math, m.mb, m.dir) == (suite, math, mb, direction)]
    if not rows:
        return None
    totals: dict[str, float] = {}
    for name in [*kernels, *PEERS]:
        if all(name in m.comparison.medians_ms for m in rows):
            totals[name] = sum(m.comparison.medians_ms[name] * m.repeat for m in rows)
    best = [best_of(m.comparison, kernels) for m in rows]
    if all(b is not None for b in best):
        totals["best"] = sum(b[1] * m.repeat for b, m in zip(best, rows, strict=True))
    totals["layers"] = len(rows)
    return totals


def _ratio(r: LayerComparison, kernel: str, peer: str = BEST_PEER) -> float | None:
    return r.ratios.get(kernel, {}).get(peer)


def target_rows(results: list[Measured], kernels: list[str]) -> list[str]:
    """The issue's targets: ratio or error, the layers it covers, and whether it is met."""
    def select(math: str, mb: int, keep: Any) -> list[Measured]:
        return [m for m in results if m.math == math and m.mb == mb and m.dir == "fwd"
                and keep(m)]

    lines = ["| target | layers | measured | met |", "|---|---:|---:|---|"]

    def row(label: str, n: int, value: float | None, ok: bool | None, fmt: str = ".2f") -> None:
        shown = "—" if value is None else format(value, fmt)
        met = "—" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {label} | {n} | {shown} | {met} |")

    for math, threshold in (("fp32", 1.0), ("fp16", 0.8)):
        net = network_times(results, "resnet50", math, 32, kernels)
        ratio = (net[BEST_PEER] / net["best"] if net and BEST_PEER in net and "best" in net
                 else None)
        row(f"{math} mb32: best-of-convbench whole ResNet-50 >= {threshold}x cudnn_best",
            net["layers"] if net else 0, ratio, None if ratio is None else ratio >= threshold)
    wino = [v for m in select("fp32", 32, lambda m: m.suite in ("resnet50", "vgg16")
                              and is_winograd_target(m.problem))
            if (v := _ratio(m.comparison, "winograd")) is not None]
    row("fp32 mb32: winograd >= 1.3x cudnn_best on every 3x3 s1 layer with C,K >= 64 "
        "(worst layer)", len(wino), min(wino) if wino else None,
        None if not wino else min(wino) >= 1.3)
    for kernel, label, keep, threshold in (
            ("im2col", "1x1 layers of ResNet-50", lambda m: m.suite == "resnet50"
             and (m.problem.kh, m.problem.kw) == (1, 1), 0.9),
            ("fft", "ResNet-50", lambda m: m.suite == "resnet50", 0.5),
            ("direct", "ResNet-50", lambda m: m.suite == "resnet50", 0.3)):
        vals = [v for m in select("fp32", 32, keep) if (v := _ratio(m.comparison, kernel))]
        g = geomean(vals)
        row(f"fp32 mb32: {kernel} >= {threshold}x cudnn_best, geometric mean over {label}",
            len(vals), g, None if g is None else g >= threshold)
    for direction in DIRECTIONS[1:]:
        net = network_times(results, "resnet50", "fp32", 32, kernels, direction)
        if net and BEST_PEER in net and "best" in net:
            row(f"fp32 mb32 {direction}: best-of-convbench whole ResNet-50 / cudnn_best "
                "(no target: reported)", int(net["layers"]), net[BEST_PEER] / net["best"], None)
    fp16 = {k: [m.comparison.rel_l2[k] for m in results if m.math == "fp16"
                and k in m.comparison.rel_l2] for k in kernels}
    worst = max((max(v) for v in fp16.values() if v), default=None)
    row(f"fp16: rel_l2 <= {FP16_REL_L2:g} for every kernel (worst layer)",
        sum(len(v) for v in fp16.values()), worst, None if worst is None else worst <= FP16_REL_L2,
        ".2e")
    failed = [m for m in results if any(peer in m.comparison.errors
                                        for peer in ("cudnn", "cudnn_best"))]
    ran = [m for m in results if "cudnn" in m.comparison.medians_ms]
    lines.append(f"| every layer ok for cudnn and cudnn_best | {len(ran) + len(failed)} | "
                 f"{len(failed)} failed | {'yes' if not failed and ran else '**no**'} |")
    return lines


def accuracy_table(results: list[Measured], names: list[str]) -> list[str]:
    """rel_l2 per kernel and math mode (worst layer), TF32 next to strict fp32."""
    maths = [m for m in ("fp32", "tf32", "fp16", "fp64") if any(r.math == m for r in results)]
    lines = ["| kernel | " + " | ".join(f"{m} rel_l2 (worst layer)" for m in maths) + " |",
             "|---|" + "---:|" * len(maths)]
    for name in names:
        cells = []
        for math in maths:
            vals = [r.comparison.rel_l2[name] for r in results
                    if r.math == math and name in r.comparison.rel_l2]
            cells.append(f"{max(vals):.2e}" if vals else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def report(results: list[Measured], kernels: list[str], pairs: int) -> str:
    lines = [f"Ratios t_cudnn_best / t_kernel (> 1: convbench faster), median of {pairs} "
             "interleaved passes on CUDA events; `best`: the fastest convbench kernel per layer. "
             "`cudnn`: the frontend's heuristic plan, `torch_cudnn`: torch.nn.functional.conv2d "
             "with cudnn.benchmark, both as t_cudnn_best / t_peer.\n"]
    groups = sorted({(m.mb, m.math, m.dir) for m in results},
                    key=lambda k: (-k[0], k[1], DIRECTIONS.index(k[2])))
    for mb, math, direction in groups:
        rows = [m for m in results if (m.mb, m.math, m.dir) == (mb, math, direction)]
        title = f"batch {mb}, {math}" + ("" if direction == "fwd" else f", {direction}")
        lines += [f"\n### {title}\n",
                  "| suite | layer | " + " | ".join(kernels) + " | best | cudnn | torch_cudnn "
                  "| cudnn_best ms |", "|---|---|" + "---:|" * (len(kernels) + 4)]
        for m in rows:
            r = m.comparison
            best = best_of(r, kernels)
            cells = [f"{v:.2f}" if (v := _ratio(r, k)) is not None else "—" for k in kernels]
            base = r.medians_ms.get(BEST_PEER)
            cells.append(f"{base / best[1]:.2f} ({best[0]})" if best and base else "—")
            cells += [f"{base / r.medians_ms[peer]:.2f}" if base and peer in r.medians_ms
                      else "—" for peer in ("cudnn", "torch_cudnn")]
            cells.append(f"{base:.3f}" if base else "—")
            lines.append(f"| {m.suite} | {r.name} | " + " | ".join(cells) + " |")
        lines.append("\nGeometric means over these layers: " + ", ".join(
            f"{k} {g:.2f}x" for k in kernels
            if (g := geomean([v for m in rows if (v := _ratio(m.comparison, k)) is not None]))))
        for suite in ("resnet50", "vgg16"):
            net = network_times(results, suite, math, mb, kernels, direction)
            if net:
                lines.append(f"\nWhole {suite} ({net['layers']:.0f} layers, x repeat), ms: "
                             + ", ".join(f"{k} {v:.3f}" for k, v in net.items()
                                         if k != "layers"))
    lines += ["\n### Targets (batch 32)\n", *target_rows(results, kernels),
              "\n### Accuracy against the float64 reference (batch 1)\n",
              *accuracy_table(results, [*kernels, *PEERS])]
    failed = [f"{m.comparison.name} mb{m.mb} {m.math} {n}: {e}" for m in results
              for n, e in m.comparison.errors.items()]
    if failed:
        lines.append("\nLeft out after an error: " + "; ".join(failed))
    return "\n".join(lines)


def measure_layer(suite: str, p: ConvProblem, kernels: list[str], pairs: int,
                  sample_time: float, reference: Any) -> LayerComparison:
    return compare_layer(suite, p, kernels, PEERS, backend="gpu", passes=pairs,
                         sample_time=sample_time, cooldown=0.0, per_call=False,
                         reference=reference)


def reference_of(p: ConvProblem, cache: dict[Any, Any]) -> Any:
    """float64 output of ``p`` on compare_layer's inputs, once per (problem, dtype)."""
    from convbench.measure.inputs import random_inputs  # noqa: PLC0415
    from convbench.problem.reference import reference_for  # noqa: PLC0415

    key = str(p.with_(fpmath="strict"))
    if key not in cache:
        cache.clear()  # layers come in order: keep one
        cache[key] = reference_for(p, *random_inputs(p))
    return cache[key]


def save(out: str, results: list[Measured], kernels: list[str], pairs: int,
         meta: dict[str, Any], prov: dict[str, Any] | None = None) -> None:
    """Write ``OUT.md`` (the report) and ``OUT.json`` (every measurement), with ``prov``
    (:mod:`convbench.store.provenance`) where given."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = report(results, kernels, pairs) + "\n"
    data = {**meta, "pairs": pairs, "kernels": kernels, "peers": list(PEERS),
            "layers": [asdict(m) for m in results]}
    if prov is not None:
        text, data = with_markdown(text, prov), with_json(data, prov)
    path.with_suffix(".md").write_text(text)
    path.with_suffix(".json").write_text(json.dumps(data, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset, under 2 minutes")
    parser.add_argument("--batch", default="32,1", help="comma list of batch sizes (32,1)")
    parser.add_argument("--math", default="fp32,fp16,tf32",
                        help="comma list of math modes: fp32, tf32, fp16, fp64")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved passes (>= 3)")
    parser.add_argument("--sample-time", type=float, default=0.005,
                        help="seconds per sample, at least (0.005)")
    parser.add_argument("--budget", type=float, default=540.0,
                        help="seconds after which no new layer starts (540)")
    parser.add_argument("--accuracy-batch", type=int, default=1,
                        help="batch size whose layers also measure rel_l2 (1; 0: none)")
    parser.add_argument("--direction", default="fwd",
                        help="comma list of directions: fwd, bwd_d, bwd_w, bwd_wb (fwd)")
    parser.add_argument("--algo", default=",".join(KERNELS))
    parser.add_argument("--match", help="regex on layer names")
    parser.add_argument("--out", help="write OUT.json and OUT.md too")
    args = parser.parse_args(argv)
    if args.pairs < 3:
        parser.error("--pairs must be >= 3")
    maths = [m for m in args.math.split(",") if m]
    unknown = set(maths) - set(MATH_MODES)
    if unknown:
        parser.error(f"unknown math modes {sorted(unknown)}; choose from {list(MATH_MODES)}")
    directions = tuple(d for d in args.direction.split(",") if d)
    if set(directions) - set(DIRECTIONS):
        parser.error(f"unknown directions {sorted(set(directions) - set(DIRECTIONS))}; "
                     f"choose from {list(DIRECTIONS)}")
    kernels = [n for n in args.algo.split(",") if n]
    from convbench.kernels.gpu.runtime import cupy_unavailable_reason  # noqa: PLC0415

    reason = cupy_unavailable_reason()
    if reason is not None:
        print(f"needs a GPU: {reason}", file=sys.stderr)
        return 2
    layers = plan_layers(args.quick, [int(b) for b in args.batch.split(",")], maths, directions)
    if args.match:
        import re  # noqa: PLC0415

        layers = [(s, rep, p) for s, rep, p in layers if re.search(args.match, p.name)]
    from convbench.store.environment import gpu_environment  # noqa: PLC0415

    meta = {"gpu": gpu_environment(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # Saved after every layer: the verdict on the host's noise comes with the last save.
    prov = provenance(repetitions={"passes": args.pairs, "sample_time_s": args.sample_time,
                                   "order": "interleaved in one process"},
                      noise=pending_noise(), backend="gpu",
                      command=[sys.executable, sys.argv[0],
                               *(argv if argv is not None else sys.argv[1:])])
    start_machine = noise.snapshot()
    results: list[Measured] = []
    references: dict[Any, Any] = {}
    interrupted = False
    start = time.perf_counter()
    try:
        for suite, repeat, p in layers:
            if results and time.perf_counter() - start > args.budget:
                print(f"budget of {args.budget:.0f} s spent: {len(results)} of {len(layers)} "
                      "layers measured", file=sys.stderr)
                break
            t0 = time.perf_counter()
            ref = reference_of(p, references) if p.mb == args.accuracy_batch else None
            r = measure_layer(suite, p, kernels, args.pairs, args.sample_time, ref)
            results.append(Measured(suite, p.math, p.mb, repeat, r, time.perf_counter() - t0,
                                    p.dir))
            print(f"{suite:8s} {p.name:16s} mb{p.mb:<2d} {p.math} {p.dir}: " + "  ".join(
                f"{n} {v:.2f}" for n in kernels if (v := _ratio(r, n)) is not None)
                + f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
            if args.out:  # after every layer: an interrupted run keeps what it measured
                save(args.out, results, kernels, args.pairs, meta, prov)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: reporting the {len(results)} of {len(layers)} layers measured",
              file=sys.stderr)
    meta["seconds"] = time.perf_counter() - start
    prov["noise"] = noise_verdict(noise.noise(start_machine, noise.snapshot()))
    print("\n" + report(results, kernels, args.pairs))
    if args.out:
        save(args.out, results, kernels, args.pairs, meta, prov)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
