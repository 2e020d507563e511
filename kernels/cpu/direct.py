"""Direct (sliding-window) convolution, compiled with Numba.

The loop nest is the definition of convolution, blocked for the CPU:

* parallel over (image, group, block of ``K_BLOCK`` output channels);
* for each output row, ``K_BLOCK`` rows of accumulators stay in L1 while the
  loop runs over input channels and filter taps;
* the innermost loop runs along the output row, contiguous in memory when
  the stride is 1, so LLVM vectorizes it.

Padding is never materialized: for each tap the valid output range is
computed so that out-of-image reads are skipped. The kernel therefore needs
no workspace beyond one accumulator block per thread.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, prange

from convbench.problem import ConvProblem
from kernels.cpu.common import cpu_dtype_reason, empty_output

#: Output channels accumulated together: each input row loaded from cache is
#: reused K_BLOCK times.
K_BLOCK = 8


@njit(cache=True, inline="always")
def _valid_range(offset: int, stride: int, width: int, out_width: int) -> tuple[int, int]:
    """Outputs ``q`` in ``[lo, hi)`` with ``0 <= q*stride + offset < width``."""
    lo = max(0, (-offset + stride - 1) // stride)
    hi = min(out_width, (width - 1 - offset) // stride + 1)
    return lo, hi


@njit(parallel=True, cache=True)
def direct_conv2d(x, w, bias, y, sh, sw, pt, pl, dh, dw, groups):
    """Sliding-window convolution ``y = conv(x, w) + bias`` written into ``y``.

    ``bias`` is always an array (zeros when the layer has none), so one
    compiled specialization serves both cases.
    """
    n_images, _, height, width = x.shape
    _, cg, kh, kw = w.shape
    _, k_total, out_h, out_w = y.shape
    kg = k_total // groups
    n_kblocks = (kg + K_BLOCK - 1) // K_BLOCK
    for item in prange(n_images * groups * n_kblocks):
        n = item // (groups * n_kblocks)
        g = (item // n_kblocks) % groups
        k0 = g * kg + (item % n_kblocks) * K_BLOCK
        k_count = min(K_BLOCK, g * kg + kg - k0)
        acc = np.empty((K_BLOCK, out_w), dtype=y.dtype)
        for p in range(out_h):
            for kk in range(k_count):
                init = bias[k0 + kk]
                for q in range(out_w):
                    acc[kk, q] = init
            for c in range(cg):
                ci = g * cg + c
                for r in range(kh):
                    row = p * sh - pt + r * dh
                    if row < 0 or row >= height:
                        continue
                    xrow = x[n, ci, row]
                    for s in range(kw):
                        offset = s * dw - pl
                        lo, hi = _valid_range(offset, sw, width, out_w)
                        if hi <= lo:
                            continue
                        # 1-D slices indexed from 0 by a range() variable: Numba can
                        # prove the index non-negative, drops the wraparound check
                        # and LLVM vectorizes the loop.
                        # A unit-stride slice keeps Numba's contiguous ('C') layout,
                        # which is what lets LLVM emit packed loads.
                        if sw == 1:
                            xs = xrow[lo + offset:hi + offset]
                            for kk in range(k_count):
                                wv = w[k0 + kk, c, r, s]
                                acc_row = acc[kk, lo:hi]
                                for j in range(hi - lo):
                                    acc_row[j] += wv * xs[j]
                        else:
                            xs_strided = xrow[lo * sw + offset:(hi - 1) * sw + offset + 1:sw]
                            for kk in range(k_count):
                                wv = w[k0 + kk, c, r, s]
                                acc_row = acc[kk, lo:hi]
                                for j in range(hi - lo):
                                    acc_row[j] += wv * xs_strided[j]
            for kk in range(k_count):
                for q in range(out_w):
                    y[n, k0 + kk, p, q] = acc[kk, q]


class DirectKernel:
    """Direct convolution on the CPU; every parameter combination."""

    name = "direct"
    backend = "cpu"
    kind = "kernel"
    pretransforms_weights = False

    def supports(self, p: ConvProblem) -> str | None:
        return cpu_dtype_reason(p)

    def workspace_bytes(self, p: ConvProblem) -> int:
        # One K_BLOCK x Q accumulator block per parallel work item in flight.
        return K_BLOCK * p.ow * p.itemsize

    def prepare(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                bias: np.ndarray | None) -> Callable[[], np.ndarray]:
        y = empty_output(p)
        b = bias if bias is not None else np.zeros(p.oc, dtype=p.dtype)
        args = (x, w, b, y, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.g)

        def run() -> np.ndarray:
            direct_conv2d(*args)
            return y

        return run


KERNEL = DirectKernel()
KERNELS = [KERNEL]
