"""rel_l2 of each GPU kernel in each math mode on ResNet-50's layers, on the host emulator.

The GPU kernels run their whole pipeline on the emulator (the CUDA sources
built for the host, GEMM precisions emulated in NumPy: TF32 operands rounded,
fp16 operands with float32 sums), so each scheme's error is measured without
a GPU. Layers keep their channel counts and filters (the reduction length
that sets the error) with the image cropped to at most ``--size`` pixels a
side and batch 1, so that the emulation stays quick. For float16 data the
table also shows the kernel computing the same fp16 inputs entirely in
float32 (``fp16 via fp32``, the scheme before tensor cores): the difference
is what fp16 operands (Winograd's U and V, im2col's GEMM) or the TF32
contraction (FFT) cost in error.

Usage::

    python benchmarks/gpu_error_modes.py --out results/gpu/emulated-errors.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from convbench.kernels.catalog import builtin_kernels
from convbench.kernels.gpu.runtime import HostRuntime
from convbench.measure.inputs import random_inputs
from convbench.measure.peers import relative_l2
from convbench.problem.conv_problem import MATH_MODES
from convbench.problem.reference import reference_for
from convbench.problem.suites import load_suite
from convbench.store.provenance import accuracy_provenance, with_markdown

COLUMNS = ("fp32", "tf32", "fp16", "fp16 via fp32")


def layer_errors(p, kernels) -> dict[str, dict[str, float]]:
    """kernel -> column -> rel_l2 on one layer."""
    out: dict[str, dict[str, float]] = {k.name: {} for k in kernels}
    for column in COLUMNS:
        math = "fp16" if column.startswith("fp16") else column
        dtype, fpmath = MATH_MODES[math]
        q = p.with_(dtype=dtype, fpmath=fpmath)
        x, w, b = random_inputs(q.with_(dtype="float32"))
        if dtype == "float16":
            x, w, b = (a.astype(np.float16) for a in (x, w, b))
        ref = reference_for(q, x, w, b)
        run_p = q.with_(dtype="float32") if column == "fp16 via fp32" else q
        xr, wr, br = ((a.astype(np.float32) for a in (x, w, b)) if run_p is not q
                      else (x, w, b))
        for kernel in kernels:
            if kernel.supports(run_p) is not None:
                continue
            y = kernel.prepare(run_p, xr, wr, br)()
            if column == "fp16 via fp32":
                y = y.astype(np.float16)
            out[kernel.name][column] = relative_l2(y, ref)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=14, help="image side cap (14)")
    parser.add_argument("--out", help="also write this Markdown file")
    args = parser.parse_args(argv)
    rt = HostRuntime()
    kernels = [type(k)(rt) for k in builtin_kernels() if k.backend == "gpu"
               and k.kind == "kernel"]
    lines = [f"rel_l2 against the float64 reference, host emulator, ResNet-50 layers at batch "
             f"1 with images cropped to {args.size}x{args.size} (channels and filters as in "
             "the network). Columns: math modes; `fp16 via fp32`: the same fp16 inputs "
             "computed in float32 throughout, output rounded to fp16.\n",
             "| layer | kernel | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    worst: dict[tuple[str, str], float] = {}
    for layer in load_suite("resnet50"):
        p = layer.problem
        side = min(p.ih, args.size)
        p = p.with_(mb=1, ih=side, iw=side, bias=True)
        errors = layer_errors(p, kernels)
        for name, cols in errors.items():
            if not cols:
                continue
            lines.append(f"| {p.name} | {name} | " + " | ".join(
                f"{cols[c]:.2e}" if c in cols else "—" for c in COLUMNS) + " |")
            for c, v in cols.items():
                worst[name, c] = max(worst.get((name, c), 0.0), v)
        print(lines[-1], flush=True)
    lines += ["", "Worst layer per kernel:", "", "| kernel | " + " | ".join(COLUMNS) + " |",
              "|---|" + "---:|" * len(COLUMNS)]
    for k in kernels:
        lines.append(f"| {k.name} | " + " | ".join(
            f"{worst[k.name, c]:.2e}" if (k.name, c) in worst else "—" for c in COLUMNS) + " |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        # The emulator runs on the host: its platform is the CPU's. Errors are measured
        # once each; they do not depend on machine noise.
        Path(args.out).write_text(with_markdown(text + "\n", accuracy_provenance(
            command=[sys.executable, sys.argv[0], *(argv if argv is not None else
                                                    sys.argv[1:])])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
