"""Winograd backward data against oneDNN (torch's CPU ``convolution_backward``), interleaved.

The layers are ResNet-50's 3x3 stride-1 convolutions with C, K >= 64 (and
optionally VGG-16's). Per layer, convbench's ``winograd`` kernel prepared for
``bwd_d`` (its rotated filter transformed once, ``call(dy)`` timed) and
torch's ``aten.convolution_backward`` with the output mask of the input
gradient (what ``torch.nn.grad.conv2d_input`` and autograd run; oneDNN on
this build) are prepared once and warmed up, then interleaved ``A B A B ...``
for ``--pairs`` passes in this process, same thread count, each sample after
a cool-down and one untimed call
(:func:`convbench.measure.peers.time_interleaved`). A layer's ratio is the
median over passes of ``t_torch / t_winograd`` (> 1: convbench faster) with
its distribution-free 95% interval; the summary is the geometric mean over
layers with its interval (:func:`convbench.measure.peers.geomean_interval`).
Both results are checked against each other before timing.

Usage::

    python benchmarks/winograd_bwd_d_vs_onednn.py --batch 8 --out results/cpu/winograd_bwd_d
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from convbench.measure.clocks import make_clock
from convbench.measure.peers import geomean_interval, time_interleaved
from convbench.measure.stats import median_rank_interval
from convbench.measure.threads import pinned_threads
from convbench.problem import ConvProblem
from convbench.problem.suites import load_suite
from convbench.registry import get_kernel


def target_layers(suites: list[str], mb: int) -> list[tuple[str, int, ConvProblem]]:
    """(suite, repeat, bwd_d problem) of every 3x3 stride-1 dilation-1 layer with C, K >= 64."""
    out = []
    for suite in suites:
        for layer in load_suite(suite):
            p = layer.problem
            if ((p.kh, p.kw, p.sh, p.sw, p.dil_h, p.dil_w) == (3, 3, 1, 1, 1, 1)
                    and min(p.ic, p.oc) >= 64):
                out.append((suite, layer.repeat,
                            dataclasses.replace(p.with_(mb=mb), dir="bwd_d", bias=False)))
    return out


def torch_bwd_d(p: ConvProblem, dy: np.ndarray, w: np.ndarray) -> Any:
    """The timed torch call: ``convolution_backward`` for the input gradient only."""
    import torch  # noqa: PLC0415 -- the peer

    dy_t, w_t = torch.from_numpy(dy), torch.from_numpy(w)
    x_like = torch.zeros(p.input_shape, dtype=dy_t.dtype)
    (pt, pb), (pl, pr) = p.padding
    if (pt, pl) != (pb, pr):
        raise ValueError(f"symmetric padding only, got {p.padding}")

    def run() -> Any:
        with torch.no_grad():
            return torch.ops.aten.convolution_backward(
                dy_t, x_like, w_t, None, list(p.stride), [pt, pl], list(p.dilation), False,
                [0, 0], p.g, [True, False, False])[0]

    return run


def measure(p: ConvProblem, pairs: int, sample_time: float, cooldown: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    dy = rng.uniform(-1, 1, p.output_shape).astype(p.dtype)
    w = rng.uniform(-1, 1, p.weight_shape).astype(p.dtype)
    ours = get_kernel("winograd", "cpu").prepare(p, dy, w, None)
    theirs = torch_bwd_d(p, dy, w)
    a, b = ours(), theirs().numpy()
    scale = float(np.abs(b).max())
    diff = float(np.abs(a - b).max())
    if diff > 1e-4 * scale:
        raise AssertionError(f"{p}: winograd and torch differ by {diff:.3g} (scale {scale:.3g})")
    samples = time_interleaved({"winograd": ours, "onednn": theirs}, passes=pairs,
                               sample_time=sample_time, cooldown=cooldown,
                               clock=make_clock("host"))
    per_pass = sorted(t / k for t, k in zip(samples["onednn"], samples["winograd"], strict=True))
    j, k = median_rank_interval(len(per_pass))
    return {"problem": str(p), "name": p.name,
            "winograd_ms": statistics.median(samples["winograd"]) * 1e3,
            "onednn_ms": statistics.median(samples["onednn"]) * 1e3,
            "ratio": statistics.median(per_pass), "interval": [per_pass[j], per_pass[k]],
            "max_abs_diff_vs_torch": diff}


def report(rows: list[dict[str, Any]], pairs: int, threads: int, command: str) -> str:
    lines = [f"Winograd bwd_d against oneDNN (torch {_torch_version()} `convolution_backward`), "
             f"ratio t_onednn / t_winograd (> 1: convbench faster), median of {pairs} "
             f"interleaved passes with its 95% interval, {threads} threads, a cool-down and a "
             f"warm call before each sample.\n\nCommand: `{command}`\n",
             "| suite | layer | mb | winograd ms | oneDNN ms | ratio | 95% interval |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        p = ConvProblem.parse(r["problem"])
        lo, hi = r["interval"]
        lines.append(f"| {r['suite']} | {r['name']} | {p.mb} | {r['winograd_ms']:.2f} | "
                     f"{r['onednn_ms']:.2f} | {r['ratio']:.2f} | {lo:.2f}-{hi:.2f} |")
    g = geomean_interval([r["ratio"] for r in rows], [tuple(r["interval"]) for r in rows])
    if g:
        lines.append(f"\nGeometric mean over {len(rows)} layers: **{g[0]:.2f}x** "
                     f"(95% interval {g[1]:.2f}-{g[2]:.2f}); target >= 1.0x: "
                     f"{'met' if g[1] >= 1.0 else 'not met' if g[2] < 1.0 else 'undecided'}.")
    return "\n".join(lines)


def _torch_version() -> str:
    import torch  # noqa: PLC0415

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--suites", default="resnet50")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--sample-time", type=float, default=0.05)
    parser.add_argument("--cooldown", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/winograd_bwd_d_vs_onednn.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    import torch  # noqa: F401, PLC0415 -- loaded first, so that pinned_threads pins its pool

    rows = []
    with pinned_threads(args.threads) as pinned:
        for suite, repeat, p in target_layers(args.suites.split(","), args.batch):
            row = {"suite": suite, "repeat": repeat,
                   **measure(p, args.pairs, args.sample_time, args.cooldown)}
            print(f"{suite} {p.name}: {row['ratio']:.2f} ({row['interval'][0]:.2f}-"
                  f"{row['interval'][1]:.2f})", flush=True)
            rows.append(row)
        text = report(rows, args.pairs, pinned["threads"], command.strip())
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text + "\n")
        out.with_suffix(".json").write_text(json.dumps(
            {"pairs": args.pairs, "threads": pinned["threads"], "command": command.strip(),
             "layers": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
