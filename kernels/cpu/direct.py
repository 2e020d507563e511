"""Direct (sliding-window) convolution, compiled with Numba.

The loop nest is the definition of convolution, blocked for the CPU in one of
two orders, chosen per layer by :func:`vectorize_over_channels`:

* **row-vectorized** (few output channels per group, e.g. depthwise): parallel over (image, group,
  block of ``K_BLOCK`` output channels); ``K_BLOCK`` rows of accumulators stay
  in L1 while the loop runs over input channels and taps; the innermost loop
  runs along the output row, contiguous when the stride is 1.
* **channel-vectorized** (16 or more output channels per group: every layer of
  the dense networks): the weights are transposed once in ``prepare`` to
  ``(G, C/g, R, S, K/g)``, and the innermost loop runs over a block of
  ``KC_BLOCK`` output channels for each of ``Q_BLOCK`` output pixels, so it is
  long and contiguous whatever the image width or stride. Measured against the
  row order: 1x1 14x14 layers ~4x, res2 3x3 56x56 17.5 -> 41.9 GFLOP/s, conv1
  (7x7 stride 2, where the row order's strided gather does not vectorize)
  11.3 -> 38.3 GFLOP/s.

In both, the innermost loop indexes 0-based 1-D slices with a ``range()``
variable: Numba can then prove the index non-negative and drop its
wraparound check, which is what lets LLVM vectorize. Padding is never
materialized: out-of-image taps are skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, prange

from convbench.problem import ConvProblem
from kernels.cpu.common import cpu_dtype_reason, empty_output

#: Row order: output channels accumulated together (each input row loaded from
#: cache is reused K_BLOCK times).
K_BLOCK = 8
#: Channel order: output pixels x output channels of one accumulator block
#: (8 x 128 float32 = 4 KiB, in L1 with the weight rows it streams).
Q_BLOCK = 8
KC_BLOCK = 128
#: Channel order pays off from this many output channels per group (its inner
#: loop must be long enough to vectorize; measured on ResNet-50 shapes).
CHANNEL_ORDER_MIN_K = 16


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


@njit(parallel=True, cache=True, fastmath={"contract"})
def direct_conv2d_channel_order(x, wt, bias, y, sh, sw, pt, pl, dh, dw):
    """Direct convolution with the innermost loop over output channels.

    ``wt`` is the weight transposed to ``(G, C/g, R, S, K/g)``. ``contract``
    lets LLVM fuse multiply-adds (one rounding instead of two; no reordering).
    """
    n_images, _, height, width = x.shape
    groups, cg, kh, kw, kg = wt.shape
    out_h, out_w = y.shape[2], y.shape[3]
    n_kblocks = (kg + KC_BLOCK - 1) // KC_BLOCK
    n_qblocks = (out_w + Q_BLOCK - 1) // Q_BLOCK
    for item in prange(n_images * groups * out_h * n_kblocks):
        n = item // (groups * out_h * n_kblocks)
        g = (item // (out_h * n_kblocks)) % groups
        p = (item // n_kblocks) % out_h
        kk0 = (item % n_kblocks) * KC_BLOCK
        k_count = min(KC_BLOCK, kg - kk0)
        acc = np.empty((Q_BLOCK, KC_BLOCK), dtype=y.dtype)
        for qb in range(n_qblocks):
            q0 = qb * Q_BLOCK
            q_count = min(Q_BLOCK, out_w - q0)
            for i in range(q_count):
                acc_row = acc[i, :k_count]
                b = bias[g * kg + kk0:g * kg + kk0 + k_count]
                for k in range(k_count):
                    acc_row[k] = b[k]
            for c in range(cg):
                ci = g * cg + c
                for r in range(kh):
                    row = p * sh - pt + r * dh
                    if row < 0 or row >= height:
                        continue
                    xrow = x[n, ci, row]
                    for s in range(kw):
                        w_row = wt[g, c, r, s, kk0:kk0 + k_count]
                        for i in range(q_count):
                            col = (q0 + i) * sw + s * dw - pl
                            if col < 0 or col >= width:
                                continue
                            xv = xrow[col]
                            acc_row = acc[i, :k_count]
                            for k in range(k_count):
                                acc_row[k] += xv * w_row[k]
            for i in range(q_count):
                for k in range(k_count):
                    y[n, g * kg + kk0 + k, p, q0 + i] = acc[i, k]


def vectorize_over_channels(p: ConvProblem) -> bool:
    """Channel order whenever a group has enough output channels to fill its inner loop."""
    return p.oc // p.g >= CHANNEL_ORDER_MIN_K


class DirectKernel:
    """Direct convolution on the CPU; every parameter combination."""

    name = "direct"
    backend = "cpu"
    kind = "kernel"
    pretransforms_weights = False

    def supports(self, p: ConvProblem) -> str | None:
        return cpu_dtype_reason(p)

    def workspace_bytes(self, p: ConvProblem) -> int:
        if vectorize_over_channels(p):
            # The transposed weights, plus one accumulator block per work item.
            return (p.oc * p.reduction_length + Q_BLOCK * KC_BLOCK) * p.itemsize
        # One K_BLOCK x Q accumulator block per parallel work item in flight.
        return K_BLOCK * p.ow * p.itemsize

    def prepare(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                bias: np.ndarray | None) -> Callable[[], np.ndarray]:
        y = empty_output(p)
        b = bias if bias is not None else np.zeros(p.oc, dtype=p.dtype)
        if vectorize_over_channels(p):
            kg = p.oc // p.g
            wt = np.ascontiguousarray(
                w.reshape(p.g, kg, p.ic // p.g, p.kh, p.kw).transpose(0, 2, 3, 4, 1))
            channel_args = (x, wt, b, y, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w)

            def run_channel_order() -> np.ndarray:
                direct_conv2d_channel_order(*channel_args)
                return y

            return run_channel_order
        args = (x, w, b, y, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.g)

        def run() -> np.ndarray:
            direct_conv2d(*args)
            return y

        return run


KERNEL = DirectKernel()
KERNELS = [KERNEL]
