"""Direct convolution's backward passes, compiled with Numba.

The math is :mod:`kernels.algorithms.direct`'s: ``bwd_d`` gathers, for
every input pixel, the ``dy`` values of the taps that reach it (one thread
owns a block of ``dx`` planes, so there is no scatter and no atomic add);
``bwd_w`` reduces over images and output pixels, one thread owning a block
of ``dw`` filters. As in the forward, the innermost loops run over 0-based
1-D slices with a ``range()`` index, so that LLVM can vectorize them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: bwd_d: input channels whose dx rows accumulate together (each dy row loaded
#: from cache serves them all).
C_BLOCK = 8
#: bwd_w: output channels whose filters accumulate together (each input row
#: loaded serves them all).
K_BLOCK = 8


@njit(cache=True, inline="always")
def _reaching(offset: int, stride: int, width: int, out_width: int) -> tuple[int, int]:
    """Outputs ``q`` in ``[lo, hi)`` with ``0 <= q*stride + offset < width``."""
    lo = max(0, (-offset + stride - 1) // stride)
    hi = min(out_width, (width - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@njit(parallel=True, cache=True, fastmath={"contract"})
def direct_backward_data(dy, w, dx, sh, sw, pt, pl, dh, dw, groups):
    """``dx`` of a convolution, gathered: written whole into ``dx``.

    Parallel over (image, group, block of ``C_BLOCK`` input channels); for
    each input row only the filter rows ``r`` with ``h + pt - r*dh`` a
    multiple of ``sh`` contribute, and along the row only every ``sw``-th
    column from each tap (the stride-aware index ranges).
    """
    n_images, channels, height, width = dx.shape
    _, cg, kh, kw = w.shape
    _, k_total, out_h, out_w = dy.shape
    kg = k_total // groups
    n_cblocks = (cg + C_BLOCK - 1) // C_BLOCK
    for item in prange(n_images * groups * n_cblocks):
        n = item // (groups * n_cblocks)
        g = (item // n_cblocks) % groups
        c0 = (item % n_cblocks) * C_BLOCK
        c_count = min(C_BLOCK, cg - c0)
        acc = np.empty((C_BLOCK, width), dtype=dx.dtype)
        for h in range(height):
            for cc in range(c_count):
                acc_row = acc[cc]
                for j in range(width):
                    acc_row[j] = 0.0
            for r in range(kh):
                num = h + pt - r * dh
                if num < 0 or num % sh != 0:
                    continue
                p = num // sh
                if p >= out_h:
                    continue
                for kk in range(kg):
                    k = g * kg + kk
                    dyrow = dy[n, k, p]
                    for s in range(kw):
                        offset = s * dw - pl
                        lo, hi = _reaching(offset, sw, width, out_w)
                        if hi <= lo:
                            continue
                        src = dyrow[lo:hi]
                        for cc in range(c_count):
                            wv = w[k, c0 + cc, r, s]
                            if sw == 1:
                                dst = acc[cc, lo + offset:hi + offset]
                                for j in range(hi - lo):
                                    dst[j] += wv * src[j]
                            else:
                                first = lo * sw + offset
                                dst_strided = acc[cc, first:(hi - 1) * sw + offset + 1:sw]
                                for j in range(hi - lo):
                                    dst_strided[j] += wv * src[j]
            for cc in range(c_count):
                out_row = dx[n, g * cg + c0 + cc, h]
                acc_row = acc[cc]
                for j in range(width):
                    out_row[j] = acc_row[j]


@njit(parallel=True, cache=True, fastmath={"contract", "reassoc"})
def direct_backward_weights(x, dy, dwt, sh, sw, pt, pl, dh, dw, groups):
    """``dw`` of a convolution, reduced over images and output pixels into ``dwt``.

    Parallel over (group, input channel, block of ``K_BLOCK`` output
    channels): each work item owns its filters' ``R*S`` sums. ``reassoc``
    lets LLVM vectorize each row's dot product (the sum of products in
    another order; the direct family's error model holds for any order, and
    on integer data every order is exact).
    """
    n_images, _, height, width = x.shape
    k_total, cg, kh, kw = dwt.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    kg = k_total // groups
    n_kblocks = (kg + K_BLOCK - 1) // K_BLOCK
    for item in prange(groups * cg * n_kblocks):
        g = item // (cg * n_kblocks)
        c = (item // n_kblocks) % cg
        k0 = g * kg + (item % n_kblocks) * K_BLOCK
        k_count = min(K_BLOCK, g * kg + kg - k0)
        ci = g * cg + c
        acc = np.zeros((K_BLOCK, kh, kw), dtype=dwt.dtype)
        # The dot products accumulate in the data's dtype (a float literal would be
        # float64 in Numba, silently more accurate than the kernel claims to be).
        zero = np.zeros(1, dtype=dwt.dtype)
        for n in range(n_images):
            for p in range(out_h):
                for r in range(kh):
                    row = p * sh - pt + r * dh
                    if row < 0 or row >= height:
                        continue
                    xrow = x[n, ci, row]
                    for s in range(kw):
                        offset = s * dw - pl
                        lo, hi = _reaching(offset, sw, width, out_w)
                        if hi <= lo:
                            continue
                        xs = xrow[lo * sw + offset:(hi - 1) * sw + offset + 1:sw]
                        for kk in range(k_count):
                            dyrow = dy[n, k0 + kk, p, lo:hi]
                            total = zero[0]
                            for j in range(hi - lo):
                                total += dyrow[j] * xs[j]
                            acc[kk, r, s] += total
        for kk in range(k_count):
            for r in range(kh):
                for s in range(kw):
                    dwt[k0 + kk, c, r, s] = acc[kk, r, s]


@njit(parallel=True, cache=True)
def bias_gradient(dy, db):
    """``db[k] = sum over n, p, q of dy[n, k, p, q]``, parallel over k."""
    n_images, channels = dy.shape[0], dy.shape[1]
    plane = dy.shape[2] * dy.shape[3]
    flat = dy.reshape(n_images, channels, plane)
    zero = np.zeros(1, dtype=db.dtype)  # accumulate in the data's dtype
    for k in prange(channels):
        total = zero[0]
        for n in range(n_images):
            row = flat[n, k]
            for i in range(plane):
                total += row[i]
        db[k] = total
