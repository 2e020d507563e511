"""Peak memory of each CPU kernel on VGG-16 conv1_2 at batch 32 (64->64, 224x224, 3x3).

Each kernel runs once in its own process; the peak resident set size
(``ru_maxrss``) is reported next to the bytes of the tensors themselves and
the kernel's ``workspace_bytes``. Usage::

    python benchmarks/memory_vgg_conv1_2.py [--batch 32] [--algo direct,im2col,fft,winograd]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

DESCRIPTOR = 'mb{batch}ic64ih224oc64kh3ph1n"vgg16_conv1_2"'


def _child(algo: str, batch: int) -> None:
    import numpy as np

    import convbench
    from convbench import ConvProblem

    p = ConvProblem.parse(DESCRIPTOR.format(batch=batch))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, p.input_shape).astype(np.float32)
    w = rng.uniform(-1, 1, p.weight_shape).astype(np.float32)
    kernel = convbench.get_kernel(algo)
    fn = kernel.prepare(p, x, w, None)
    t0 = time.perf_counter()
    y = fn()
    seconds = time.perf_counter() - t0
    probe = (slice(0, 1), slice(0, 4), slice(100, 104), slice(100, 104))
    ref = convbench.reference(x[:1], w, padding=1)[probe]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"algo": algo, "seconds": seconds, "peak_rss": peak,
                      "tensor_bytes": p.tensor_bytes,
                      "workspace_bytes": kernel.workspace_bytes(p),
                      "probe_max_abs_err": float(np.abs(y[probe] - ref).max())}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--algo", default="direct,im2col,fft,winograd")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.batch)
        return 0
    print(f"VGG-16 conv1_2, batch {args.batch}, float32\n")
    print("| kernel | first call s | peak RSS GiB | tensors GiB | workspace MiB | probe err |")
    print("|---|---:|---:|---:|---:|---:|")
    status = 0
    for algo in args.algo.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", algo, "--batch",
                               str(args.batch)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {algo} | FAILED ({proc.returncode}) | | | | {proc.stderr[-200:]} |")
            status = 1
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {algo} | {r['seconds']:.1f} | {r['peak_rss'] / 2**30:.2f} | "
              f"{r['tensor_bytes'] / 2**30:.2f} | {r['workspace_bytes'] / 2**20:.0f} | "
              f"{r['probe_max_abs_err']:.1e} |")
    return status


if __name__ == "__main__":
    sys.exit(main())
