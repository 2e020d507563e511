"""Error studies: how each algorithm's error grows with the reduction length,
and Winograd F(2x2,3x3) against direct convolution on the VGG-16 layers.

1. **Error vs reduction length** n = C*R*S from 9 to ~10^5 (3x3 filters, C from
   1 to 11111, a 12x12 image, 8 output channels, float32, seeded uniform
   [-1, 1] data): ``rel_l2 / u`` and ``bound_ratio`` per algorithm, plotted on
   log-log axes with the sqrt(n) (random-walk) and n (worst-case) lines.
2. **VGG-16, F(2x2,3x3) vs direct** (float32, batch 1): Lavin & Gray (2016,
   Table 4) report F(2x2,3x3) *more* accurate than direct convolution on VGG
   layers in fp32; this measures the same comparison with convbench's kernels.

float16 needs the GPU backend; without a GPU it is reported as not run.

Usage::

    python benchmarks/error_study.py [--out results/accuracy] [--max-n 100000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from convbench import ConvProblem, get_kernel
from convbench.measure.inputs import random_inputs
from convbench.measure.metrics import UNIT_ROUNDOFF, error_metrics
from convbench.problem.reference import reference_for
from convbench.problem.suites import load_suite
from convbench.store.provenance import accuracy_provenance, with_json, with_markdown

ALGOS = ("direct", "im2col", "fft", "winograd")


def reduction_sweep(max_n: int) -> list[dict]:
    """Errors of every CPU algorithm for 3x3 problems of growing C (n = 9C)."""
    channels = sorted({int(round(c)) for c in np.geomspace(1, max_n / 9, 14)})
    rows = []
    for c in channels:
        p = ConvProblem.parse(f'mb1ic{c}ih12oc8kh3ph1n"n{9 * c}"')
        x, w, b = random_inputs(p, seed=c)
        ref, scale = reference_for(p, x, w, b), reference_for(p, x, w, b, absolute=True)
        for algo in ALGOS:
            y = get_kernel(algo).prepare(p, x, w, b)()
            m = error_metrics(y, ref, scale, p.dtype)
            u = UNIT_ROUNDOFF[p.dtype]
            rows.append({"n": p.reduction_length, "algo": algo, "dtype": p.dtype,
                         "rel_l2": m["rel_l2"], "rel_l2_over_u": m["rel_l2"] / u,
                         "bound_ratio": m["bound_ratio"], "max_abs": m["max_abs"]})
        print(f"n = {p.reduction_length:6d}: " + "  ".join(
            f"{r['algo']} {r['rel_l2']:.2e}" for r in rows[-len(ALGOS):]), flush=True)
    return rows


def vgg_winograd_vs_direct() -> list[dict]:
    """fp32 errors of direct, im2col and Winograd on VGG-16's 3x3 layers at batch 1."""
    rows = []
    for layer in load_suite("vgg16", batch=1, dtype="float32"):
        p = layer.problem
        x, w, b = random_inputs(p)
        ref, scale = reference_for(p, x, w, b), reference_for(p, x, w, b, absolute=True)
        row = {"layer": p.name, "n": p.reduction_length}
        for algo in ("direct", "im2col", "winograd"):
            m = error_metrics(get_kernel(algo).prepare(p, x, w, b)(), ref, scale, p.dtype)
            row[algo] = {k: m[k] for k in ("rel_l2", "max_abs", "bound_ratio")}
        rows.append(row)
        print(f"{p.name:8s} n={p.reduction_length:5d}  max_abs direct "
              f"{row['direct']['max_abs']:.2e}  winograd {row['winograd']['max_abs']:.2e}",
              flush=True)
    return rows


def plot_reduction(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = np.array(sorted({r["n"] for r in rows}), dtype=float)
    for ax, key, label in ((axes[0], "rel_l2_over_u", "rel_l2 / u"),
                           (axes[1], "bound_ratio", "bound_ratio = max |err| / (u |W|*|X|)")):
        for algo in ALGOS:
            pts = [(r["n"], r[key]) for r in rows if r["algo"] == algo]
            ax.loglog(*zip(*pts, strict=True), "o-", label=algo, ms=4)
        ax.loglog(ns, np.sqrt(ns), "k--", lw=1, label="sqrt(n)")
        ax.loglog(ns, ns, "k:", lw=1, label="n (worst case)")
        ax.set_xlabel("reduction length n = C*R*S")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("float32, 3x3, 12x12 image, uniform [-1, 1]")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_vgg(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    xs = np.arange(len(rows))
    for i, algo in enumerate(("direct", "im2col", "winograd")):
        ax.bar(xs + (i - 1) * 0.27, [r[algo]["max_abs"] for r in rows], 0.27, label=algo)
    ax.set_yscale("log")
    ax.set_xticks(xs, [r["layer"] for r in rows], rotation=30)
    ax.set_ylabel("max |y - ref| (float32)")
    ax.set_title("VGG-16 layers, batch 1: Winograd F(2x2,3x3) vs direct")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def vgg_table(rows: list[dict]) -> str:
    lines = ["| layer | n | direct max_abs | im2col max_abs | winograd max_abs | "
             "direct / winograd | direct rel_l2 | winograd rel_l2 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['n']} | {r['direct']['max_abs']:.2e} | "
                     f"{r['im2col']['max_abs']:.2e} | {r['winograd']['max_abs']:.2e} | "
                     f"{r['direct']['max_abs'] / r['winograd']['max_abs']:.2f} | "
                     f"{r['direct']['rel_l2']:.2e} | {r['winograd']['rel_l2']:.2e} |")
    geo = math.exp(np.mean([math.log(r["direct"]["max_abs"] / r["winograd"]["max_abs"])
                            for r in rows]))
    lines.append(f"\nGeometric mean of direct / winograd max_abs: {geo:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/accuracy")
    parser.add_argument("--max-n", type=int, default=100_000)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reduction = reduction_sweep(args.max_n)
    vgg = vgg_winograd_vs_direct()
    # Each error is measured once: rounding errors do not depend on machine noise.
    prov = accuracy_provenance()
    (out / "error_vs_n.json").write_text(json.dumps(with_json(
        {"float32": reduction, "float16": "not run: needs the GPU backend"}, prov), indent=1))
    (out / "vgg16_winograd_vs_direct.json").write_text(json.dumps(
        with_json({"layers": vgg}, prov), indent=1))
    (out / "vgg16_winograd_vs_direct.md").write_text(with_markdown(vgg_table(vgg) + "\n",
                                                                   prov))
    plot_reduction(reduction, out / "error_vs_n.png")
    plot_vgg(vgg, out / "vgg16_winograd_vs_direct.png")
    print(vgg_table(vgg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
