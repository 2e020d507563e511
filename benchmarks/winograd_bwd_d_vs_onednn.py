"""Winograd backward data against oneDNN (torch's CPU ``convolution_backward``), interleaved.

The layers are ResNet-50's 3x3 stride-1 convolutions with C, K >= 64 (and
optionally VGG-16's). Per layer, each Winograd kernel of ``--algo``
(F(2x2,3x3), F(4x4,3x3) and F(6x6,3x3) by default) prepared for ``bwd_d``
(its rotated filter transformed once, ``call(dy)`` timed) and torch's
``aten.convolution_backward`` with the output mask of the input gradient
(what ``torch.nn.grad.conv2d_input`` and autograd run; oneDNN on this build)
are prepared once and warmed up, then interleaved ``A B C D A B C D ...`` for
``--pairs`` passes in this process, same thread count, each sample after a
cool-down and one untimed call
(:func:`convbench.measure.peers.time_interleaved`). A kernel's ratio on a
layer is the median over passes of ``t_torch / t_kernel`` (> 1: convbench
faster) with its distribution-free 95% interval; the summary is the
geometric mean over layers with its interval
(:func:`convbench.measure.peers.geomean_interval`), per kernel and for the
fastest kernel of each layer (the one with the highest median ratio, which
is what ``tune`` would keep). Every result is checked against torch's before
timing.

Usage::

    python benchmarks/winograd_bwd_d_vs_onednn.py --batch 8 --out results/cpu/winograd_bwd_d
    python benchmarks/winograd_bwd_d_vs_onednn.py --algo winograd  # F(2x2,3x3) alone
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

from convbench.measure import noise
from convbench.measure.clocks import make_clock
from convbench.measure.cooldown import WARM_S
from convbench.measure.peers import geomean_interval, time_interleaved
from convbench.measure.stats import median_rank_interval
from convbench.measure.threads import pinned_threads
from convbench.problem import ConvProblem
from convbench.problem.suites import load_suite
from convbench.registry import get_kernel
from convbench.store.provenance import noise_verdict, provenance, with_json, with_markdown


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


def measure(p: ConvProblem, algos: list[str], pairs: int, sample_time: float,
            cooldown: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    dy = rng.uniform(-1, 1, p.output_shape).astype(p.dtype)
    w = rng.uniform(-1, 1, p.weight_shape).astype(p.dtype)
    theirs = torch_bwd_d(p, dy, w)
    b = theirs().numpy()
    scale = float(np.abs(b).max())
    calls, diffs, details = {}, {}, {}
    for algo in algos:
        ours = get_kernel(algo, "cpu").prepare(p, dy, w, None)
        diff = float(np.abs(ours() - b).max())
        if diff > 1e-4 * scale:
            raise AssertionError(f"{p}: {algo} and torch differ by {diff:.3g} "
                                 f"(scale {scale:.3g})")
        calls[algo], diffs[algo] = ours, diff
        details[algo] = {k: v for k, v in getattr(ours, "details", {}).items()
                         if k in ("tile", "layout", "schedule", "blocks")}
    samples = time_interleaved({**calls, "onednn": theirs}, passes=pairs,
                               sample_time=sample_time, cooldown=cooldown,
                               clock=make_clock("host"))
    kernels = {}
    for algo in algos:
        per_pass = sorted(t / k for t, k in zip(samples["onednn"], samples[algo], strict=True))
        j, k = median_rank_interval(len(per_pass))
        kernels[algo] = {"ms": statistics.median(samples[algo]) * 1e3,
                         "ratio": statistics.median(per_pass),
                         "interval": [per_pass[j], per_pass[k]],
                         "max_abs_diff_vs_torch": diffs[algo], "details": details[algo],
                         "samples_s": samples[algo]}
    fastest = max(kernels, key=lambda a: kernels[a]["ratio"])
    return {"problem": str(p), "name": p.name,
            "onednn_ms": statistics.median(samples["onednn"]) * 1e3,
            "onednn_samples_s": samples["onednn"], "kernels": kernels, "fastest": fastest}


def report(rows: list[dict[str, Any]], algos: list[str], pairs: int, threads: int,
           command: str) -> str:
    # F(2x2,3x3)'s kernel has no label attribute; the tile kernels name their tile.
    labels = {a: getattr(get_kernel(a, "cpu"), "label", "F(2x2,3x3)") for a in algos}
    lines = [f"Winograd bwd_d against oneDNN (torch {_torch_version()} `convolution_backward`), "
             f"ratio t_onednn / t_kernel (> 1: convbench faster), median of {pairs} "
             f"interleaved passes with its 95% interval, {threads} threads, a cool-down and "
             f"{WARM_S * 1e3:.0f} ms of warm calls before each sample.\n\nCommand: `{command}`\n",
             "| suite | layer | mb | oneDNN ms | "
             + " | ".join(f"{a} ({labels[a]}) ms | ratio [95%]" for a in algos)
             + " | fastest |",
             "|---|---|---:|---:|" + "---:|---|" * len(algos) + "---|"]
    for r in rows:
        p = ConvProblem.parse(r["problem"])
        cells = []
        for a in algos:
            k = r["kernels"][a]
            lo, hi = k["interval"]
            cells.append(f"{k['ms']:.2f} | {k['ratio']:.2f} [{lo:.2f}, {hi:.2f}]")
        lines.append(f"| {r['suite']} | {r['name']} | {p.mb} | {r['onednn_ms']:.2f} | "
                     + " | ".join(cells) + f" | {r['fastest']} |")
    lines += ["", "| kernel | layers | geometric mean [95% CI] | lowest layer | >= 1.0x |",
              "|---|---:|---:|---:|---|"]
    summaries = [(f"{a} ({labels[a]})", [r["kernels"][a] for r in rows]) for a in algos]
    if len(algos) > 1:
        summaries.append(("fastest per layer", [r["kernels"][r["fastest"]] for r in rows]))
    for label, ks in summaries:
        g = geomean_interval([k["ratio"] for k in ks], [tuple(k["interval"]) for k in ks])
        if g:
            verdict = "met" if g[1] >= 1.0 else "not met" if g[2] < 1.0 else "undecided"
            lines.append(f"| {label} | {len(ks)} | **{g[0]:.2f}** [{g[1]:.2f}, {g[2]:.2f}] | "
                         f"{min(k['ratio'] for k in ks):.2f} | {verdict} |")
    return "\n".join(lines)


def _torch_version() -> str:
    import torch  # noqa: PLC0415

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--suites", default="resnet50")
    parser.add_argument("--algo", default="winograd,winograd_4x4,winograd_6x6",
                        help="comma-separated Winograd kernels (default: the three tiles)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--sample-time", type=float, default=0.05)
    parser.add_argument("--cooldown", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/winograd_bwd_d_vs_onednn.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    algos = [a.strip() for a in args.algo.split(",") if a.strip()]
    import torch  # noqa: F401, PLC0415 -- loaded first, so that pinned_threads pins its pool

    rows = []
    start = noise.snapshot()
    with pinned_threads(args.threads) as pinned:
        for suite, repeat, p in target_layers(args.suites.split(","), args.batch):
            row = {"suite": suite, "repeat": repeat,
                   **measure(p, algos, args.pairs, args.sample_time, args.cooldown)}
            print(f"{suite} {p.name}: " + ", ".join(
                f"{a} {k['ratio']:.2f}" for a, k in row["kernels"].items()), flush=True)
            rows.append(row)
        text = report(rows, algos, args.pairs, pinned["threads"], command.strip())
    machine = noise.noise(start, noise.snapshot())
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        prov = provenance(repetitions={"passes": args.pairs, "sample_time_s": args.sample_time,
                                       "cooldown_s": args.cooldown,
                                       "order": "interleaved in one process"},
                          noise=noise_verdict(machine), command=command.split())
        out.with_suffix(".md").write_text(with_markdown(text + "\n", prov))
        out.with_suffix(".json").write_text(json.dumps(with_json(
            {"pairs": args.pairs, "threads": pinned["threads"], "command": command.strip(),
             "algos": algos, "layers": rows}, prov), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
