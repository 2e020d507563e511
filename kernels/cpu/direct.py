"""Direct (sliding-window) convolution, compiled with Numba.

The loop nest is the definition of convolution (:mod:`kernels.algorithms.direct`),
blocked for the CPU in one of two orders, chosen per layer by
:func:`vectorize_over_channels`:

* **row order** (few output channels per group, e.g. depthwise): parallel
  over (image, group, block of ``K_BLOCK`` output channels); ``K_BLOCK`` rows
  of accumulators stay in L1 while the loop runs over input channels and
  taps; the innermost loop runs along the output row, contiguous when the
  stride is 1.
* **channel order** (``CHANNEL_ORDER_MIN_K`` or more output channels per
  group: every layer of the dense networks): the weights are transposed once
  in ``prepare`` to ``(G, C/g, R, S, K/g)``, and the innermost loop runs over
  a block of ``KC_BLOCK`` output channels for each of ``Q_BLOCK`` output
  pixels, so it is long and contiguous whatever the image width or stride.
  Each loop body takes four input channels and two output pixels: the
  accumulators live in an L1 block (Numba cannot keep an array in
  registers), so every accumulator load and store is amortized over four
  fused multiply-adds, and each weight vector serves both pixels. Wider
  bodies need more broadcast inputs and accumulators than AVX2's 16 vector
  registers hold.

In both, the innermost loop indexes 0-based 1-D slices with a ``range()``
variable: Numba can then prove the index non-negative and drop its
wraparound check, which is what lets LLVM vectorize. Padding is never
materialized: the row order skips out-of-image taps; the channel order
gathers the input values of a pixel block into a small buffer, with zeros
off the image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange

from convbench.problem import DIRECTIONS, ConvProblem
from convbench.problem.arguments import aligned_empty

from .base import CpuKernel, bias_or_zeros, empty_input, empty_output, empty_weights, num_threads
from .direct_backward import C_BLOCK, bias_gradient, direct_backward_data, direct_backward_weights
from .direct_backward import K_BLOCK as BWD_K_BLOCK

#: Row order: output channels accumulated together (each input row loaded from
#: cache is reused K_BLOCK times).
K_BLOCK = 8
#: Channel order: output pixels x output channels of one accumulator block
#: (8 x 256 float32 = 8 KiB, in L1 with the four weight rows it streams;
#: the block size that measured fastest over ResNet-50; results/cpu/NOTES.md).
Q_BLOCK = 8
KC_BLOCK = 256
#: Channel order pays off from this many output channels per group (its inner
#: loop must be long enough to vectorize; measured on ResNet-50 shapes).
CHANNEL_ORDER_MIN_K = 16
#: Values of a channel-order work item's arrays: its accumulators and gathered inputs.
CHANNEL_ORDER_ITEM = Q_BLOCK * KC_BLOCK + Q_BLOCK * 4


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


@njit(cache=True, inline="always")
def _gather_columns(x, n, ci, row, col0, sw, width, q_count, xv):
    """``xv[i, j] = x[n, ci + j, row, col0 + i*sw]`` for 4 channels, zero off the image.

    Zeros stand in for the padding, so the multiply-add loop needs no branch.
    """
    for i in range(q_count):
        col = col0 + i * sw
        if 0 <= col < width:
            for j in range(4):
                xv[i, j] = x[n, ci + j, row, col]
        else:
            for j in range(4):
                xv[i, j] = 0.0


@njit(parallel=True, cache=True, fastmath={"contract"})
def direct_conv2d_channel_order(x, wt, bias, y, sh, sw, pt, pl, dh, dw):
    """Direct convolution with the innermost loop over output channels.

    ``wt`` is the weight transposed to ``(G, C/g, R, S, K/g)``. One loop body
    updates two output pixels from four input channels: each accumulator
    vector loaded from L1 takes four fused multiply-adds before it is stored
    back, and each weight vector serves both pixels. ``contract`` lets LLVM fuse
    multiply-adds (one rounding instead of two; no reordering).
    """
    n_images, _, height, width = x.shape
    groups, cg, kh, kw, kg = wt.shape
    out_h, out_w = y.shape[2], y.shape[3]
    n_kblocks = (kg + KC_BLOCK - 1) // KC_BLOCK
    n_qblocks = (out_w + Q_BLOCK - 1) // Q_BLOCK
    cg_unrolled = cg - cg % 4
    for item in prange(n_images * groups * out_h * n_kblocks):
        n = item // (groups * out_h * n_kblocks)
        g = (item // (out_h * n_kblocks)) % groups
        p = (item // n_kblocks) % out_h
        kk0 = (item % n_kblocks) * KC_BLOCK
        k_count = min(KC_BLOCK, kg - kk0)
        acc = np.empty((Q_BLOCK, KC_BLOCK), dtype=y.dtype)
        xv = np.empty((Q_BLOCK, 4), dtype=y.dtype)
        b = bias[g * kg + kk0:g * kg + kk0 + k_count]
        for qb in range(n_qblocks):
            q0 = qb * Q_BLOCK
            q_count = min(Q_BLOCK, out_w - q0)
            q_paired = q_count - q_count % 2
            for i in range(q_count):
                acc_row = acc[i, :k_count]
                for k in range(k_count):
                    acc_row[k] = b[k]
            for c in range(0, cg_unrolled, 4):
                for r in range(kh):
                    row = p * sh - pt + r * dh
                    if row < 0 or row >= height:
                        continue
                    for s in range(kw):
                        _gather_columns(x, n, g * cg + c, row, q0 * sw + s * dw - pl, sw,
                                        width, q_count, xv)
                        w0 = wt[g, c, r, s, kk0:kk0 + k_count]
                        w1 = wt[g, c + 1, r, s, kk0:kk0 + k_count]
                        w2 = wt[g, c + 2, r, s, kk0:kk0 + k_count]
                        w3 = wt[g, c + 3, r, s, kk0:kk0 + k_count]
                        for i in range(0, q_paired, 2):
                            xa, xb = xv[i], xv[i + 1]
                            xa0, xa1, xa2, xa3 = xa[0], xa[1], xa[2], xa[3]
                            xb0, xb1, xb2, xb3 = xb[0], xb[1], xb[2], xb[3]
                            acc_a = acc[i, :k_count]
                            acc_b = acc[i + 1, :k_count]
                            for k in range(k_count):
                                w0k, w1k, w2k, w3k = w0[k], w1[k], w2[k], w3[k]
                                # Left to right, so that the four FMAs chain on
                                # one accumulator in channel order.
                                acc_a[k] = acc_a[k] + xa0 * w0k + xa1 * w1k + xa2 * w2k + xa3 * w3k
                                acc_b[k] = acc_b[k] + xb0 * w0k + xb1 * w1k + xb2 * w2k + xb3 * w3k
                        for i in range(q_paired, q_count):
                            xa = xv[i]
                            xa0, xa1, xa2, xa3 = xa[0], xa[1], xa[2], xa[3]
                            acc_a = acc[i, :k_count]
                            for k in range(k_count):
                                acc_a[k] = (acc_a[k] + xa0 * w0[k] + xa1 * w1[k]
                                            + xa2 * w2[k] + xa3 * w3[k])
            # The last C/g mod 4 channels, one at a time (all of conv1's three).
            for c in range(cg_unrolled, cg):
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
                            xs = xrow[col]
                            acc_row = acc[i, :k_count]
                            for k in range(k_count):
                                acc_row[k] += xs * w_row[k]
            for i in range(q_count):
                for k in range(k_count):
                    y[n, g * kg + kk0 + k, p, q0 + i] = acc[i, k]


def transposed_weight_bytes(p: ConvProblem) -> int:
    """The channel order's copy of the weights, ``(G, C/g, R, S, K/g)``."""
    return p.oc * p.reduction_length * p.itemsize


def vectorize_over_channels(p: ConvProblem) -> bool:
    """Channel order whenever a group has enough output channels to fill its inner loop."""
    return p.oc // p.g >= CHANNEL_ORDER_MIN_K


class DirectKernel(CpuKernel):
    """Direct convolution on the CPU; every parameter combination, every direction.

    The backward directions are :mod:`kernels.cpu.direct_backward`'s loop
    nests: ``bwd_d`` a gather (``run(dy)``), ``bwd_w`` a reduction over N, P
    and Q (``run(x, dy)``), ``bwd_wb`` with ``db`` beside it.
    """

    name = "direct"
    family = "direct"
    directions = DIRECTIONS
    takes_input_at_call = True  # run(x=x): a plan passes each new input

    def workspace_bytes(self, p: ConvProblem) -> int:
        """Each of Numba's threads holds one work item's accumulators at a time; the
        channel order also keeps the transposed weights."""
        threads = num_threads()
        if p.dir == "bwd_d":
            return threads * C_BLOCK * p.iw * p.itemsize  # one block of dx rows
        if p.dir in ("bwd_w", "bwd_wb"):
            # the filters' sums, and the one-element dtype carrier of the dot products
            return threads * (BWD_K_BLOCK * p.kh * p.kw + 1) * p.itemsize
        if self.channel_order(p):
            return transposed_weight_bytes(p) + threads * CHANNEL_ORDER_ITEM * p.itemsize
        # One K_BLOCK x Q accumulator block per parallel work item in flight.
        return threads * K_BLOCK * p.ow * p.itemsize

    def channel_order(self, p: ConvProblem) -> bool:
        """The channel order where it serves (:func:`vectorize_over_channels`) and its
        transposed weights fit the cap; the row order, which keeps no copy, otherwise."""
        return (vectorize_over_channels(p) and transposed_weight_bytes(p)
                + num_threads() * CHANNEL_ORDER_ITEM * p.itemsize <= self.workspace_cap)

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[..., Any]:
        if p.dir == "bwd_d":
            dx = empty_input(p)
            geometry = (p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.g)

            def run_backward_data(dy: np.ndarray = x) -> np.ndarray:
                direct_backward_data(dy, w, dx, *geometry)
                return dx

            return run_backward_data
        if p.dir in ("bwd_w", "bwd_wb"):
            dw = empty_weights(p)
            db = aligned_empty((p.oc,), p.dtype) if p.dir == "bwd_wb" else None
            geometry = (p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.g)

            def run_backward_weights(x: np.ndarray = x, dy: np.ndarray = w) -> Any:
                direct_backward_weights(x, dy, dw, *geometry)
                if db is None:
                    return dw
                bias_gradient(dy, db)
                return dw, db

            return run_backward_weights
        y = empty_output(p)
        b = bias_or_zeros(p, bias)
        if self.channel_order(p):
            kg = p.oc // p.g
            wt = np.ascontiguousarray(
                w.reshape(p.g, kg, p.ic // p.g, p.kh, p.kw).transpose(0, 2, 3, 4, 1))
            channel_args = (wt, b, y, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w)

            def run_channel_order(x: np.ndarray = x) -> np.ndarray:
                direct_conv2d_channel_order(x, *channel_args)
                return y

            return run_channel_order
        args = (w, b, y, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.g)

        def run(x: np.ndarray = x) -> np.ndarray:
            direct_conv2d(x, *args)
            return y

        return run


KERNELS = [DirectKernel()]
