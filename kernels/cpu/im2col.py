"""im2col + GEMM convolution: lower the input to a matrix, then one BLAS GEMM.

For each tile of images (or of output rows, when one image's lowered matrix
would exceed the workspace cap) a Numba kernel writes the lowered matrix
straight in the layout the GEMM consumes::

    col[b, (c*R + r)*S + s, p*Q + q] = x_padded[n0+b, c, p*sh + r*dh, q*sw + s*dw]

Because input channel ``c = g*C/g + c'``, rows of one group are contiguous, so
``col`` viewed as ``(nb, G, C/g*R*S, rows*Q)`` feeds one batched
``numpy.matmul`` with the weights ``(G, K/g, C/g*R*S)`` whose output *is* the
NCHW output block ``y[n0:n0+nb].reshape(nb, G, K/g, P*Q)[..., p0*Q:(p0+rows)*Q]``:
no transpose afterwards. A 1x1, stride-1, unpadded convolution is already a
GEMM and skips the lowering.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, prange

from convbench.problem import ConvProblem
from kernels.cpu.common import (
    WORKSPACE_CAP_BYTES,
    add_bias,
    cpu_dtype_reason,
    empty_output,
    iter_tiles,
    plan_tiles,
)


@njit(parallel=True, cache=True)
def im2col_lower(x, col, n0, p0, rows, kh, kw, sh, sw, pt, pl, dh, dw, out_w):
    """Write the lowered matrix of images ``n0:n0+nb``, output rows ``p0:p0+rows``."""
    nb = col.shape[0]
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    for item in prange(nb * channels * kh):
        b = item // (channels * kh)
        c = (item // kh) % channels
        r = item % kh
        for s in range(kw):
            crow = col[b, (c * kh + r) * kw + s]
            offset = s * dw - pl
            lo = max(0, (-offset + sw - 1) // sw)
            hi = min(out_w, (width - 1 - offset) // sw + 1)
            hi = max(hi, lo)
            for pp in range(rows):
                dst = crow[pp * out_w:(pp + 1) * out_w]
                row = (p0 + pp) * sh - pt + r * dh
                if row < 0 or row >= height:
                    for q in range(out_w):
                        dst[q] = 0
                    continue
                for q in range(lo):
                    dst[q] = 0
                for q in range(out_w - hi):
                    dst[hi + q] = 0
                # Explicit loops over 0-based slices: slice *assignment* in Numba
                # takes a slow generic path, and a 0-based range() index lets LLVM
                # drop the wraparound check and vectorize the unit-stride copy.
                xrow = x[n0 + b, c, row]
                inner = dst[lo:hi]
                if sw == 1:
                    src = xrow[lo + offset:hi + offset]
                    for q in range(hi - lo):
                        inner[q] = src[q]
                elif hi > lo:
                    src_strided = xrow[lo * sw + offset:(hi - 1) * sw + offset + 1:sw]
                    for q in range(hi - lo):
                        inner[q] = src_strided[q]


def is_pointwise_gemm(p: ConvProblem) -> bool:
    """1x1, stride 1, no padding: the input already is the GEMM operand."""
    return (p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.oh, p.ow) == (1, 1, 1, 1, 0, 0, p.ih, p.iw)


def plan_lowering(p: ConvProblem, cap: int) -> tuple[int, int]:
    """Images and output rows per tile whose lowered matrix fits ``cap`` (CPU and GPU)."""
    bytes_per_row = p.ic * p.kh * p.kw * p.ow * p.itemsize
    return plan_tiles(p.mb, p.oh, bytes_per_row, cap)


class Im2colKernel:
    """im2col lowering + one batched BLAS GEMM per tile; every parameter combination.

    Parameters
    ----------
    workspace_cap : int
        Upper bound on the lowered-matrix bytes of one tile.
    """

    name = "im2col"
    backend = "cpu"
    kind = "kernel"
    pretransforms_weights = False

    def __init__(self, workspace_cap: int = WORKSPACE_CAP_BYTES) -> None:
        self.workspace_cap = workspace_cap

    def supports(self, p: ConvProblem) -> str | None:
        return cpu_dtype_reason(p)

    def _plan(self, p: ConvProblem) -> tuple[int, int]:
        return plan_lowering(p, self.workspace_cap)

    def workspace_bytes(self, p: ConvProblem) -> int:
        if is_pointwise_gemm(p):
            return 0
        nb, rows = self._plan(p)
        return nb * p.ic * p.kh * p.kw * rows * p.ow * p.itemsize

    def prepare(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                bias: np.ndarray | None) -> Callable[[], np.ndarray]:
        g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
        y = empty_output(p)
        y_blocks = y.reshape(p.mb, g, kg, p.oh * p.ow)
        w_mat = w.reshape(g, kg, cg * p.kh * p.kw)

        if is_pointwise_gemm(p):
            x_mat = x.reshape(p.mb, g, cg, p.ih * p.iw)

            def run_pointwise() -> np.ndarray:
                np.matmul(w_mat, x_mat, out=y_blocks)
                if bias is not None:
                    add_bias(y, bias)
                return y

            return run_pointwise

        nb, rows = self._plan(p)
        tiles = list(iter_tiles(p.mb, p.oh, nb, rows))
        crs = p.ic * p.kh * p.kw
        # Flat buffer: its prefix viewed as (nb', CRS, rows'*Q) is contiguous for
        # any tile size, so short last tiles need no copies.
        col_flat = np.empty(nb * crs * rows * p.ow, dtype=p.dtype)
        geometry = (p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.ow)

        def run() -> np.ndarray:
            for t in tiles:
                tile_col = col_flat[:t.nb * crs * t.rows * p.ow].reshape(t.nb, crs, t.rows * p.ow)
                im2col_lower(x, tile_col, t.n0, t.p0, t.rows, *geometry)
                out = y_blocks[t.n0:t.n0 + t.nb, :, :, t.p0 * p.ow:(t.p0 + t.rows) * p.ow]
                np.matmul(w_mat, tile_col.reshape(t.nb, g, crs // g, t.rows * p.ow),
                          out=out)
            if bias is not None:
                add_bias(y, bias)
            return y

        return run


KERNEL = Im2colKernel()
KERNELS = [KERNEL]
