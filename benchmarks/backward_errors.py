"""Errors of every CPU algorithm per direction on ResNet-50 and VGG-16, and how bwd_w's grows.

Two studies, one script:

1. **Per algorithm and direction**: every layer of ResNet-50 and VGG-16 (batch
   ``--batch``, float32, seeded uniform inputs), every registered CPU kernel
   and oneDNN that computes the direction: ``rel_l2``, ``bound_ratio`` (the
   worst error in units of ``u * (|W| * |X|)_i``, the classical dot-product
   scale) and ``envelope_ratio`` (in units of convbench's envelope; <= 1 is
   correct). The table gives the median and the largest over the layers.
2. **bwd_w against its reduction length** ``N*P*Q``: one 3x3 layer (16 -> 16
   channels, padding 1) over batches and image sizes so that ``N*P*Q`` spans
   three decades; per algorithm the largest error relative to the output's
   largest magnitude, and the envelope's own allowance on the same scale. The
   growth exponents (log-log slopes) are compared with benchdnn's widening of
   its Winograd bwd_w threshold, ``(mb*oh*ow)^0.4``.
3. **Planted faults per direction** (``tests/planted_faults.py``'s
   ``BACKWARD_FAULTS``): each measured on ResNet-50's layers in its direction
   beside the correct kernel, held to the envelope by ``convbench check``'s
   rule; the margin is the smallest faulty ``envelope_ratio`` over the
   largest legitimate one.

Usage::

    python benchmarks/backward_errors.py --out results/accuracy/backward_errors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from statistics import median

import numpy as np

from convbench.contract import refusal
from convbench.measure.compare import envelope, output_errors, reduction_length
from convbench.measure.inputs import make_inputs
from convbench.measure.metrics import reference_and_scales
from convbench.measure.threads import pinned_threads
from convbench.problem import ConvProblem
from convbench.problem.suites import load_suite
from convbench.registry import kernels
from convbench.store.provenance import accuracy_provenance, with_json, with_markdown

DIRECTIONS = ("fwd", "bwd_d", "bwd_w")
SUITES = ("resnet50", "vgg16")
#: (batch, image size) of the growth study: N*P*Q from 64 to 102400.
GROWTH = ((1, 8), (1, 16), (1, 32), (2, 32), (1, 64), (4, 64), (4, 128), (8, 112))
GROWTH_LAYER = "mb1ic16ih8oc16kh3ph1"


def cpu_names() -> list[str]:
    return [k.name for k in kernels("cpu") if k.name != "numpy_im2col"]


def per_layer(batch: int, suites: tuple[str, ...] = SUITES) -> list[dict]:
    """One row per (suite, layer, direction, kernel)."""
    rows = []
    for suite in suites:
        for layer in load_suite(suite, batch=batch):
            for direction in DIRECTIONS:
                p = layer.problem if direction == "fwd" else replace(layer.problem, dir=direction)
                a, b, bias = make_inputs(p, 0)
                reference = None
                for kernel in kernels("cpu"):
                    if kernel.name == "numpy_im2col" or refusal(kernel, p) is not None:
                        continue
                    if reference is None:
                        reference = reference_and_scales(p, a, b, bias)
                    y = kernel.prepare(p, a, b, bias)()
                    e = output_errors(p, y, reference, kernel.error_model(p))
                    rows.append({"suite": suite, "layer": p.name, "dir": direction,
                                 "kernel": kernel.name, "n": reduction_length(p),
                                 **{k: e[k] for k in ("rel_l2", "bound_ratio", "envelope_ratio",
                                                      "max_rel")}})
                print(f"{suite} {layer.problem.name} {direction}", file=sys.stderr, flush=True)
    return rows


def growth() -> list[dict]:
    """bwd_w errors and the envelope's allowance, normwise, per N*P*Q."""
    base = ConvProblem.parse(GROWTH_LAYER)
    rows = []
    for mb, size in GROWTH:
        p = replace(base.with_(mb=mb, ih=size, iw=size), dir="bwd_w")
        a, b, _ = make_inputs(p, 1)
        reference = reference_and_scales(p, a, b, None)
        scale = float(np.max(np.abs(reference.ref)))
        for kernel in kernels("cpu"):
            if kernel.name == "numpy_im2col" or refusal(kernel, p) is not None:
                continue
            y = np.asarray(kernel.prepare(p, a, b, None)(), dtype=np.float64)
            model = kernel.error_model(p)
            allowance = float(np.max(envelope(p, reference, model)))
            e = output_errors(p, y, reference, model)
            rows.append({"kernel": kernel.name, "mb": mb, "size": size,
                         "npq": reduction_length(p), "rel_l2": e["rel_l2"],
                         "max_err_rel": float(np.max(np.abs(y - reference.ref))) / scale,
                         "envelope_rel": allowance / scale,
                         "envelope_ratio": e["envelope_ratio"]})
    return rows


def fault_margins(batch: int) -> list[dict]:
    """Each backward planted fault on ResNet-50's layers: caught how often, by what margin."""
    from convbench.measure.compare import check_records, margins  # noqa: PLC0415
    from convbench.measure.runner import SweepSettings, Task, measure  # noqa: PLC0415
    from convbench.registry import get_kernel, register  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    import planted_faults  # noqa: PLC0415

    settings = SweepSettings(mode="accuracy", isolate=False)
    rows = []
    for direction, fault in planted_faults.BACKWARD_FAULTS.items():
        layers = [replace(x, problem=replace(x.problem, dir=direction,
                                             bias=direction == "bwd_wb"))
                  for x in load_suite("resnet50", batch=batch)]
        builtin = get_kernel(fault.name)
        clean = [measure(Task(x, fault.name, settings, "resnet50")) for x in layers]
        register(fault, replace=True)
        try:
            faulty = [measure(Task(x, fault.name, settings, "resnet50")) for x in layers]
        finally:
            register(builtin, replace=True)
        caught = len(check_records(faulty).findings)
        (m,) = margins(clean, faulty, ("envelope_ratio",))
        rows.append({"dir": direction, "fault": fault.fault, "kernel": fault.name,
                     "layers": len(layers), "caught": caught,
                     "clean_findings": len(check_records(clean).findings),
                     "largest_legitimate": m.largest_legitimate,
                     "legitimate_at": m.legitimate_at, "smallest_fault": m.smallest_fault,
                     "fault_at": m.fault_at, "margin": m.ratio})
        print(f"fault {direction}: caught {caught}/{len(layers)}", file=sys.stderr, flush=True)
    return rows


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def report(rows: list[dict], grow: list[dict], batch: int, threads: int,
           faults: list[dict] | None = None) -> str:
    lines = [f"# Errors per algorithm and direction (float32, batch {batch}, {threads} threads)\n",
             "Seeded uniform [-1, 1] inputs; each direction's float64 reference "
             "(`convbench.problem.reference`). `bound_ratio`: worst error in units of "
             "u·(|W|·|X|)ᵢ; `envelope_ratio`: in units of the envelope (≤ 1 passes). "
             "Median and largest over the suite's layers.\n",
             "| suite | dir | kernel | layers | rel_l2 median | rel_l2 max | bound_ratio median "
             "| bound_ratio max | envelope_ratio max |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((r["suite"], r["dir"], r["kernel"]) for r in rows))
    for suite, d, k in keys:
        mine = [r for r in rows if (r["suite"], r["dir"], r["kernel"]) == (suite, d, k)]
        rel = [r["rel_l2"] for r in mine]
        bnd = [r["bound_ratio"] for r in mine]
        env = [r["envelope_ratio"] for r in mine]
        lines.append(f"| {suite} | {d} | {k} | {len(mine)} | {median(rel):.2e} | {max(rel):.2e} "
                     f"| {median(bnd):.3f} | {max(bnd):.3f} | {max(env):.3f} |")
    missing = [n for n in ("fft", "winograd") if n in cpu_names()
               and not any(r["kernel"] == n and r["dir"] != "fwd" for r in rows)]
    if missing:
        lines.append(f"\n{', '.join(missing)}: no backward direction is computed by the "
                     "kernels registered when this ran, so only their forward rows appear.")
    if not grow:
        return "\n".join(lines)
    lines += ["\n## bwd_w: error against the reduction length N·P·Q\n",
              f"Layer `{GROWTH_LAYER}` in bwd_w at (batch, image) = "
              + ", ".join(f"({m}, {s})" for m, s in GROWTH)
              + ". `max err / max|dw|`: the worst error over the largest output magnitude; "
              "`envelope / max|dw|`: the envelope's largest allowance on the same scale.\n",
              "| kernel | N·P·Q | rel_l2 | max err / max abs(dw) | envelope / max abs(dw) | "
              "envelope_ratio |", "|---|---:|---:|---:|---:|---:|"]
    for r in grow:
        lines.append(f"| {r['kernel']} | {r['npq']} | {r['rel_l2']:.2e} | {r['max_err_rel']:.2e} "
                     f"| {r['envelope_rel']:.2e} | {r['envelope_ratio']:.3f} |")
    lines += ["", "| kernel | error growth exponent | envelope growth exponent | widening of "
                  "the envelope over the span | benchdnn's (mb·oh·ow)^0.4 over the span |",
              "|---|---:|---:|---:|---:|"]
    for k in dict.fromkeys(r["kernel"] for r in grow):
        mine = [r for r in grow if r["kernel"] == k]
        npq = [r["npq"] for r in mine]
        err = slope(npq, [r["max_err_rel"] for r in mine])
        env = slope(npq, [r["envelope_rel"] for r in mine])
        widen = mine[-1]["envelope_rel"] / mine[0]["envelope_rel"]
        theirs = (npq[-1] / npq[0]) ** 0.4
        lines.append(f"| {k} | {err:.2f} | {env:.2f} | {widen:.2f}x | {theirs:.2f}x |")
    lines.append(
        "\nThe exponents are log-log slopes against N·P·Q. On this normwise scale (error over "
        "the largest |dw|, which itself grows as sqrt(N·P·Q) for random data) an exponent of "
        "0.4 means benchdnn's relative threshold grows as (mb·oh·ow)^0.4, while convbench's "
        "envelope is a per-element bound from the rounding model: where its widening over the "
        "span is below benchdnn's, convbench's envelope is the tighter of the two as N·P·Q "
        "grows.")
    if faults:
        lines += ["\n## Planted faults per direction (ResNet-50)\n",
                  "Each fault replaces the built-in kernel of its name and is measured on every "
                  "ResNet-50 layer in its direction; `convbench check`'s rule (envelope_ratio > "
                  "1) must flag it. Margin: the smallest faulty envelope_ratio over the largest "
                  "legitimate one (the correct kernel on the same layers).\n",
                  "| dir | fault | caught | correct kernel flagged | largest legitimate | "
                  "smallest fault | margin |", "|---|---|---:|---:|---:|---:|---:|"]
        for f in faults:
            lines.append(f"| {f['dir']} | {f['fault']} | {f['caught']}/{f['layers']} | "
                         f"{f['clean_findings']} | {f['largest_legitimate']:.3g} "
                         f"({f['legitimate_at']}) | {f['smallest_fault']:.3g} ({f['fault_at']}) "
                         f"| {f['margin']:.3g}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    parser.add_argument("--suites", default=",".join(SUITES),
                        help="comma list of suites of the first study (resnet50,vgg16); empty: "
                             "none")
    parser.add_argument("--skip-studies", action="store_true",
                        help="leave out the bwd_w growth study and the planted faults")
    args = parser.parse_args()
    with pinned_threads(args.threads) as pinned:
        rows = per_layer(args.batch, tuple(s for s in args.suites.split(",") if s))
        grow = [] if args.skip_studies else growth()
        faults = [] if args.skip_studies else fault_margins(args.batch)
    text = report(rows, grow, args.batch, pinned["threads"], faults)
    print(text)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Each error is measured once: rounding errors do not depend on machine noise.
        prov = accuracy_provenance()
        path.with_suffix(".md").write_text(with_markdown(
            text + f"\n\nCommand: `python benchmarks/backward_errors.py {' '.join(sys.argv[1:])}`"
            "\n", prov))
        path.with_suffix(".json").write_text(json.dumps(with_json(
            {"command": sys.argv, "batch": args.batch, "threads": pinned["threads"],
             "layers": rows, "growth": grow, "faults": faults}, prov), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
