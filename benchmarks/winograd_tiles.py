"""The Winograd family side by side: speed against error on VGG-16's and ResNet-50's 3x3 layers.

Every 3x3 stride-1 layer of VGG-16 and ResNet-50, at each batch, with
direct, im2col, FFT, Winograd F(2x2,3x3), F(4x4,3x3), F(6x6,3x3) (both point
sets) and oneDNN at its best with NCHW in and out (``onednn_best``):

* **time**: convbench's kernels through :func:`convbench.plan` callables
  (weights transformed once, each call given the input) against oneDNN,
  interleaved in this process, a cool-down and one untimed call before each
  sample (:func:`convbench.measure.peers.time_interleaved`); a layer's ratio
  is the median over passes of ``t_onednn / t_kernel`` (> 1: convbench is
  faster) with its distribution-free 95% interval; effective GFLOP/s count
  the direct convolution's flops; the fastest tile of a layer is cross-fitted
  (each pass reports the tile that was fastest on the other passes), and a
  target holds only when the lower end of its interval clears it;
  direct and FFT are timed at batch 1 only unless ``--all-batches``;
* **error** (at batch 1, the inputs of :func:`convbench.measure.inputs.make_inputs`):
  ``rel_l2``, ``max_rel``, ``bound_ratio`` and the envelope ratio in float32,
  and float64's ``rel_l2`` as the floor each algorithm reaches with more bits.

Writes ``OUT.json`` (every number), ``OUT.md`` (the tables and the summary
against the targets) and ``OUT.png`` (error against speed per layer: one
curve per point set through the three tiles, a point per other algorithm).

    python benchmarks/winograd_tiles.py                 # batch 1 and 8, about 10 minutes
    python benchmarks/winograd_tiles.py --quick         # four layers, batch 1
    python benchmarks/winograd_tiles.py --out results/cpu/winograd_tiles
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import convbench
from convbench.kernels.cpu.winograd_tiles import Winograd6x6Kernel
from convbench.measure import noise
from convbench.measure.clocks import make_clock
from convbench.measure.compare import envelope
from convbench.measure.inputs import make_inputs
from convbench.measure.metrics import error_metrics, reference_and_scales
from convbench.measure.peers import geomean_interval, time_interleaved
from convbench.measure.stats import crossfit_fastest, median_rank_interval
from convbench.measure.threads import pinned_threads
from convbench.problem import ConvProblem
from convbench.problem.suites import load_suite
from convbench.registry import get_kernel
from convbench.store.provenance import noise_verdict, provenance, with_json, with_markdown

WINOGRAD = ("winograd", "winograd_4x4", "winograd_6x6", "winograd_6x6_standard")
ALGOS = ("direct", "im2col", "fft", *WINOGRAD)
#: oneDNN with NCHW in and out in its fastest configuration (chosen at its prepare).
PEER = "onednn_best"
#: Timed at batch 1 only unless --all-batches: at batch 8 FFT (2-20 GFLOP/s on 3x3 layers)
#: and direct alone would take the default run past ten minutes.
BATCH1_ONLY = ("direct", "fft")
#: Tile and point set of each Winograd name, for the tables and the picture.
TILE_OF = {"winograd": ("F(2x2,3x3)", "standard"), "winograd_4x4": ("F(4x4,3x3)", "standard"),
           "winograd_6x6": ("F(6x6,3x3)", "convbench"),
           "winograd_6x6_standard": ("F(6x6,3x3)", "standard")}


class Winograd6x6Standard(Winograd6x6Kernel):
    """F(6x6,3x3) with NNPACK's points, registered for this study only."""

    name = "winograd_6x6_standard"

    def __init__(self) -> None:
        super().__init__(points="standard")


def layers(quick: bool) -> list[tuple[str, ConvProblem]]:
    """(suite, problem at batch 1) for every 3x3 stride-1 layer of VGG-16 and ResNet-50."""
    out = []
    for suite in ("vgg16", "resnet50"):
        for layer in load_suite(suite, batch=1, dtype="float32"):
            p = layer.problem
            if p is not None and (p.kh, p.kw, p.sh, p.sw) == (3, 3, 1, 1):
                out.append((suite, p))
    if quick:
        keep = {"conv3_2", "conv5_1", "res3_branch2b", "res5_branch2b"}
        out = [(s, p) for s, p in out if p.name in keep]
    return out


def is_target(p: ConvProblem) -> bool:
    """The speed targets' layers: 3x3 stride 1 with C, K >= 64."""
    return min(p.ic, p.oc) >= 64


def conv_args(p: ConvProblem) -> dict[str, Any]:
    return {"padding": p.padding, "groups": p.g}


def errors_of(p: ConvProblem, algos: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """float32 metrics (and float64's rel_l2) of every algorithm on ``p`` at batch 1."""
    out: dict[str, dict[str, float]] = {}
    for dtype in ("float32", "float64"):
        q = p.with_(dtype=dtype, mb=1)
        x, w, b = make_inputs(q)
        reference = reference_and_scales(q, x, w, b)
        for name in (*algos, PEER):
            kernel = get_kernel(name)
            if kernel.supports(q) is not None:
                continue
            y = kernel.prepare(q, x, w, b)()
            limit = envelope(q, reference, kernel.error_model(q))
            m = error_metrics(np.asarray(y), reference, dtype, limit)
            row = out.setdefault(name, {})
            if dtype == "float32":
                row.update({k: m[k] for k in ("rel_l2", "max_rel", "bound_ratio",
                                              "envelope_ratio")})
            else:
                row["rel_l2_float64"] = m["rel_l2"]
    return out


def time_layer(p: ConvProblem, algos: tuple[str, ...], passes: int, sample_time: float,
               cooldown: float) -> dict[str, Any]:
    """Interleaved seconds per call of every algorithm's plan and of oneDNN on ``p``."""
    x, w, b = make_inputs(p)
    calls = {}
    phases = {}
    for name in algos:
        if get_kernel(name).supports(p) is not None:
            continue
        f = convbench.plan(p.input_shape, w, b, algo=name, **conv_args(p))
        f(x)  # compile, first-touch the buffers
        calls[name] = lambda f=f: f(x)
    peer = get_kernel(PEER).prepare(p, x, w, b)
    peer()
    calls[PEER] = peer
    samples = time_interleaved(calls, passes=passes, sample_time=sample_time,
                               cooldown=cooldown, clock=make_clock("host"))
    for name in algos:
        if name in calls:
            prepared = get_kernel(name).prepare(p, x, w, b)
            prepared()
            if "phase_s" in getattr(prepared, "details", {}):
                phases[name] = dict(prepared.details["phase_s"])
    result: dict[str, Any] = {"median_ms": {}, "ratio": {}, "interval": {}, "gflops": {},
                              "phase_ms": {k: {n: v * 1e3 for n, v in d.items()}
                                           for k, d in phases.items()},
                              "samples_ms": {n: [v * 1e3 for v in s]
                                             for n, s in samples.items()}}
    for name, s in samples.items():
        med = statistics.median(s)
        result["median_ms"][name] = med * 1e3
        result["gflops"][name] = p.flops / med / 1e9
        if name == PEER:
            continue
        per_pass = sorted(tp / tk for tp, tk in zip(samples[PEER], s, strict=True))
        j, k = median_rank_interval(len(per_pass))
        result["ratio"][name] = statistics.median(per_pass)
        result["interval"][name] = (per_pass[j], per_pass[k])
    return result


TILES = ("winograd", "winograd_4x4", "winograd_6x6")


def median_with_interval(per_pass: list[float]) -> tuple[float, float, float]:
    """The median of per-pass ratios with its distribution-free 95% interval."""
    per_pass = sorted(per_pass)
    j, k = median_rank_interval(len(per_pass))
    return statistics.median(per_pass), per_pass[j], per_pass[k]


def fastest_tile(r: dict[str, Any]) -> tuple[float, tuple[float, float]] | None:
    """A layer's fastest tile against the peer, cross-fitted: pass ``i`` reports the tile
    whose median over the other passes is the smallest, so that no sample both chooses and
    is reported. Files written before samples were kept fall back to the tile with the
    largest median ratio (chosen and reported on the same samples, so biased fast)."""
    names = [n for n in TILES if n in r["ratio"]]
    if not names:
        return None
    samples = r.get("samples_ms", {})
    if all(n in samples for n in names) and PEER in samples:
        fit = crossfit_fastest({n: [[v] for v in samples[n]] for n in names})
        if fit is not None:
            ours = [rnd[0] for rnd in fit[0]]
            value, lo, hi = median_with_interval(
                [tp / tk for tp, tk in zip(samples[PEER], ours, strict=True)])
            return value, (lo, hi)
    n = max(names, key=lambda n: r["ratio"][n])
    return r["ratio"][n], tuple(r["interval"][n])


def summary(rows: list[dict[str, Any]]) -> list[tuple[str, Any, float | None]]:
    """(what, (value, lo, hi) or None, target) for the speed targets."""
    out = []
    for batch in sorted({r["mb"] for r in rows}) + [None]:
        group = [r for r in rows if r["target"] and (batch is None or r["mb"] == batch)]
        where = f"batch {batch}" if batch else "batch 1 and 8"
        for name, target in (("winograd_6x6", None), ("winograd_4x4", 1.2),
                             ("winograd", 1.0)):
            vals = [(r["ratio"][name], r["interval"][name]) for r in group
                    if name in r["ratio"]]
            g = geomean_interval([v for v, _ in vals], [i for _, i in vals])
            out.append((f"{name} x oneDNN, geomean, {where}", g, target))
        best = [b for r in group if (b := fastest_tile(r)) is not None]
        crossfit = all("samples_ms" in r for r in group)
        out.append((f"fastest Winograd per layer x oneDNN, geomean, {where}"
                    + ("" if crossfit else " (not cross-fitted: no samples kept)"),
                    geomean_interval([v for v, _ in best], [i for _, i in best]), 1.3))
        for name in TILES:
            ran = [r for r in group if name in r["ratio"]]
            worst = min(ran, key=lambda r: r["ratio"][name], default=None)
            out.append((f"{name} slowest layer x oneDNN, {where}",
                        None if worst is None else
                        (worst["ratio"][name], *worst["interval"][name]), 0.7))
    return out


def holds(value: tuple[float, float, float] | None, target: float | None) -> str:
    """``yes`` when the interval's lower end clears the target; ``not shown`` (with the
    point) when only the point estimate does; ``no`` otherwise."""
    if target is None or value is None:
        return "-"
    if value[1] >= target:
        return "yes"
    if value[0] >= target:
        return f"not shown (point {value[0]:.2f})"
    return "no"


def report(rows: list[dict[str, Any]], errors: dict[str, dict[str, dict[str, float]]],
           meta: dict[str, Any]) -> str:
    """The Markdown tables."""
    lines = ["# The Winograd family: speed against error (CPU)", "",
             f"`{meta['command']}` on {meta['cpu']}, {meta['threads']} threads, "
             f"{meta['passes']} interleaved passes per layer, cool-down "
             f"{meta['cooldown']} s, {meta['minutes']:.1f} minutes. Ratio = t_oneDNN / "
             "t_kernel (> 1: convbench faster), median over passes [95% interval]; "
             "convbench's kernels through `convbench.plan` callables.", ""]
    lines += ["## Speed targets (3x3 stride 1, C, K >= 64)", "",
              "| what | measured | target | holds |", "|---|---|---|---|"]
    for what, value, target in summary(rows):
        text = "-" if value is None else f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"
        lines.append(f"| {what} | {text} | {'-' if target is None else target} | "
                     f"{holds(value, target)} |")
    names = [n for n in ALGOS if any(n in r["ratio"] for r in rows)]
    lines += ["", "## Time: ratio to oneDNN, and effective GFLOP/s", "",
              "| layer | mb | oneDNN GFLOP/s | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = []
        for n in names:
            if n in r["ratio"]:
                lo, hi = r["interval"][n]
                cells.append(f"{r['ratio'][n]:.2f} [{lo:.2f}, {hi:.2f}] "
                             f"({r['gflops'][n]:.0f})")
            else:
                cells.append("-")
        lines.append(f"| {r['suite']} {r['name']} | {r['mb']} | {r['gflops'][PEER]:.0f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## Where the Winograd time goes (ms per call: input transform / GEMM / "
              "output transform)", "", "| layer | mb | " + " | ".join(WINOGRAD) + " |",
              "|---|---|" + "---|" * len(WINOGRAD)]
    for r in rows:
        cells = []
        for n in WINOGRAD:
            ph = r["phase_ms"].get(n)
            cells.append("-" if not ph else
                         f"{ph['input_transform']:.2f} / {ph['gemm']:.2f} / "
                         f"{ph['output_transform']:.2f}")
        lines.append(f"| {r['suite']} {r['name']} | {r['mb']} | " + " | ".join(cells) + " |")
    err_names = [n for n in (*ALGOS, PEER) if any(n in e for e in errors.values())]
    lines += ["", "## Error at batch 1 (float32 rel_l2 / max_rel / bound_ratio; "
              "float64 rel_l2 as the floor)", "",
              "| layer | " + " | ".join(err_names) + " |", "|---|" + "---|" * len(err_names)]
    for key, e in errors.items():
        cells = [("-" if n not in e else
                  f"{e[n]['rel_l2']:.1e} / {e[n]['max_rel']:.1e} / {e[n]['bound_ratio']:.2f}"
                  f" ({e[n]['rel_l2_float64']:.0e})") for n in err_names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "## Which points give the smaller error", ""]
    for suite in ("vgg16", "resnet50"):
        picks = {n: [e[n]["rel_l2"] for k, e in errors.items() if k.startswith(suite)
                     and n in e] for n in WINOGRAD}
        med = {n: statistics.median(v) for n, v in picks.items() if v}
        if "winograd_6x6" in med and "winograd_6x6_standard" in med:
            lines.append(
                f"- {suite}: median float32 rel_l2 F(2x2,3x3) {med['winograd']:.2e}, "
                f"F(4x4,3x3) {med['winograd_4x4']:.2e}, F(6x6,3x3) standard (NNPACK) "
                f"points {med['winograd_6x6_standard']:.2e}, convbench's points "
                f"{med['winograd_6x6']:.2e}: "
                f"{100 * (1 - med['winograd_6x6'] / med['winograd_6x6_standard']):.0f}% lower.")
    return "\n".join(lines) + "\n"


def picture(rows: list[dict[str, Any]], errors: dict[str, dict[str, dict[str, float]]],
            path: Path, batch: int) -> None:
    """Error against speed per layer at ``batch``: a curve per point set through the tiles."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    chosen = [r for r in rows if r["mb"] == batch]
    cols = 4
    n_rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 3.2 * n_rows), squeeze=False)
    for ax, r in zip(axes.flat, chosen, strict=False):
        e = errors[f"{r['suite']} {r['name']}"]
        for label, names, style in (
                ("Winograd, standard points", ("winograd", "winograd_4x4",
                                               "winograd_6x6_standard"), "o-"),
                ("Winograd, convbench points", ("winograd", "winograd_4x4", "winograd_6x6"),
                 "s--")):
            pts = [(r["gflops"][n], e[n]["rel_l2"]) for n in names if n in r["gflops"]]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=label)
                for n in names:
                    if n in r["gflops"]:
                        ax.annotate(TILE_OF[n][0][2:5], (r["gflops"][n], e[n]["rel_l2"]),
                                    fontsize=7)
        for n, marker in (("direct", "^"), ("im2col", "v"), ("fft", "D"), (PEER, "*")):
            if n in r["gflops"] and n in e:
                ax.plot(r["gflops"][n], e[n]["rel_l2"], marker, label=n, markersize=8)
        ax.set_yscale("log")
        ax.set_title(f"{r['suite']} {r['name']} mb{r['mb']}", fontsize=9)
        ax.set_xlabel("effective GFLOP/s")
        ax.set_ylabel("float32 rel_l2")
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four layers at batch 1")
    parser.add_argument("--batch", default=None, help="comma list of batch sizes (1,8)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--sample-time", type=float, default=0.02)
    parser.add_argument("--cooldown", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--algo", default=",".join(ALGOS))
    parser.add_argument("--all-batches", action="store_true",
                        help=f"time {', '.join(BATCH1_ONLY)} at every batch (default: batch 1)")
    parser.add_argument("--out", default=None, help="write OUT.json, OUT.md and OUT.png")
    args = parser.parse_args(argv)
    convbench.register(Winograd6x6Standard(), replace=True)
    algos = tuple(n for n in args.algo.split(",") if n)
    batches = [int(b) for b in (args.batch or ("1" if args.quick else "1,8")).split(",")]
    start = time.perf_counter()
    machine_start = noise.snapshot()
    rows, errors = [], {}
    with pinned_threads(args.threads) as pinned:
        for suite, p in layers(args.quick):
            errors[f"{suite} {p.name}"] = errors_of(p, algos)
            for mb in batches:
                q = p.with_(mb=mb)
                timed = tuple(n for n in algos
                              if mb == 1 or args.all_batches or n not in BATCH1_ONLY)
                t = time_layer(q, timed, args.passes, args.sample_time, args.cooldown)
                rows.append({"suite": suite, "name": p.name, "mb": mb, "problem": str(q),
                             "target": is_target(q), **t})
                print(f"{suite:8s} {p.name:14s} mb{mb}: " + "  ".join(
                    f"{n} {t['ratio'][n]:.2f}" for n in algos if n in t["ratio"]), flush=True)
    from convbench.store.environment import cpu_isa, cpu_model  # noqa: PLC0415

    machine = noise.noise(machine_start, noise.snapshot())
    meta = {"command": "python benchmarks/winograd_tiles.py " + " ".join(argv or sys.argv[1:]),
            "cpu": f"{cpu_model()} ({cpu_isa()})", "threads": pinned["threads"],
            "blas": pinned["blas"], "passes": args.passes, "cooldown": args.cooldown,
            "minutes": (time.perf_counter() - start) / 60}
    text = report(rows, errors, meta)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # OUT.png at the first batch, OUT-mbN.png at the others; the JSON names them, so
        # that its provenance covers them.
        pictures = {mb: out.with_suffix(".png") if mb == batches[0] else
                    out.with_name(f"{out.name}-mb{mb}.png") for mb in batches}
        prov = provenance(repetitions={"passes": args.passes, "sample_time_s": args.sample_time,
                                       "cooldown_s": args.cooldown,
                                       "errors": "once per layer and algorithm, batch 1"},
                          noise=noise_verdict(machine),
                          command=[sys.executable, sys.argv[0],
                                   *(argv if argv is not None else sys.argv[1:])])
        out.with_suffix(".md").write_text(with_markdown(text, prov))
        out.with_suffix(".json").write_text(json.dumps(with_json(
            {"meta": meta, "rows": rows, "errors": errors,
             "pictures": [p.name for p in pictures.values()]}, prov), indent=1, default=float))
        for mb, name in pictures.items():
            picture(rows, errors, name, mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
