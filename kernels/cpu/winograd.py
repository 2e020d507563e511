"""Winograd F(2x2,3x3) on the CPU: Numba transforms and one batched BLAS GEMM per block.

The transforms are :mod:`kernels.algorithms.winograd`'s, written out as the
additions they are (no multiplications by 0 or 1), so a NaN or Inf reaches
exactly the outputs whose window contains it, as in the reference. Border
tiles read zeros outside the image and write only the outputs that exist
(odd P or Q).

Where the input has at least
:data:`~kernels.cpu.winograd_channels_last.MIN_CHANNELS` channels, the
forward pass takes the channels-last path of
:mod:`kernels.cpu.winograd_channels_last` instead (the same arithmetic,
vectorized over channels rather than tiles).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, prange

from convbench.problem import ConvProblem

from ..algorithms import winograd as algorithm
from ..algorithms import winograd_backward as backward_algorithm
from ..algorithms.winograd import A_T, B_T, FILTER, TILE_IN, TILE_OUT, G
from . import winograd_backward
from . import winograd_channels_last as channels_last
from .base import CpuKernel, bias_or_zeros, empty_output, num_threads


def filter_transform(w: np.ndarray, groups: int, g_matrix: np.ndarray = G) -> np.ndarray:
    """``U = G g G^T`` as :func:`kernels.algorithms.winograd.filter_transform`, in Numba.

    Computed in float64 and rounded once, so U is correctly rounded.
    ``g_matrix`` is the paper's ``G`` (other values only for fault-injection tests).
    """
    k, cg = w.shape[0], w.shape[1]
    g_matrix = np.ascontiguousarray(g_matrix, dtype=np.float64)
    if g_matrix.shape != (TILE_IN, FILTER):
        raise ValueError(f"G must be {TILE_IN}x{FILTER}, got {g_matrix.shape}")
    u = np.empty((TILE_IN, TILE_IN, k, cg), dtype=w.dtype)
    sandwich_product(w, g_matrix, u)
    return u.reshape(TILE_IN * TILE_IN, groups, k // groups, cg)


@njit(parallel=True, cache=True)
def sandwich_product(w, g_matrix, u):
    """``u[i, j, k, c] = sum_r sum_s G[i, r] w[k, c, r, s] G[j, s]``, in float64.

    Each result is rounded once, when it is stored into ``u`` (the dtype of
    ``w``). A loop nest rather than ``einsum``: a framework that does not
    cache ``U`` pays this in every call, and the nest is an order of
    magnitude faster on large filters (results/cpu/vs_onednn.md).
    """
    n_k, n_c = w.shape[0], w.shape[1]
    # Trip counts are the module's constants, so LLVM unrolls the loops fully.
    for k in prange(n_k):
        t = np.empty((TILE_IN, FILTER))
        for c in range(n_c):
            for i in range(TILE_IN):
                for s in range(FILTER):
                    acc = 0.0
                    for r in range(FILTER):
                        acc += g_matrix[i, r] * np.float64(w[k, c, r, s])
                    t[i, s] = acc
            for i in range(TILE_IN):
                for j in range(TILE_IN):
                    acc = 0.0
                    for s in range(FILTER):
                        acc += t[i, s] * g_matrix[j, s]
                    u[i, j, k, c] = acc


# The transforms below are written for LLVM's loop vectorizer, which Numba
# relies on: every inner loop runs over unit-stride 1-D views with a loop
# index >= 0 (a signed offset inside an index, like ``v[q, c, t0 + tj]``, makes
# Numba emit a negative-index wraparound select that defeats vectorization,
# and stride-2 loads are not vectorized either). So tile columns are split
# into even and odd input columns once, and every other loop is contiguous.


@njit(cache=True, inline="always")
def load_padded_row(x, n, c, row, col0, out):
    """``out[j] = x[n, c, row, col0 + j]``, zero outside the image."""
    height, width = x.shape[2], x.shape[3]
    span = out.shape[0]
    if row < 0 or row >= height:
        for j in range(span):
            out[j] = 0
        return
    lo = min(max(0, -col0), span)
    hi = max(lo, min(span, width - col0))
    src = x[n, c, row]
    # Element loops, not slice assignment: Numba's array-to-array setitem
    # allocates a temporary in case the two overlap.
    for j in range(lo):
        out[j] = 0
    shifted = src[col0 + lo:col0 + hi]
    dst = out[lo:hi]
    for j in range(hi - lo):
        dst[j] = shifted[j]
    for j in range(hi, span):
        out[j] = 0


@njit(parallel=True, cache=True)
def input_transform(x, v, n0, nb, tr0, n_tile_rows, n_tile_cols, pt, pl):
    """``V = B^T d B`` for the tiles of images ``n0:n0+nb``, tile rows ``tr0:+n``.

    ``v`` has shape ``(16, C, T)`` with tile index ``t = (b*rows + i)*cols + j``.
    A tile row at a time: its four input rows are copied (zero-padded) and
    ``B^T d`` is applied to whole rows; each resulting row is split into even
    and odd columns (tile ``tj`` covers columns ``2tj .. 2tj+3`` = even[tj],
    odd[tj], even[tj+1], odd[tj+1]), and ``(B^T d) B`` becomes four
    contiguous vector operations writing four runs of ``v``.
    """
    channels = x.shape[1]
    span = 2 * n_tile_cols + 2  # input columns under one row of tiles
    half = n_tile_cols + 1
    for item in prange(nb * channels):
        b = item // channels
        c = item % channels
        d = np.empty((4, span), dtype=x.dtype)
        bt_d = np.empty(span, dtype=x.dtype)
        even = np.empty(half, dtype=x.dtype)
        odd = np.empty(half, dtype=x.dtype)
        d0, d1, d2, d3 = d[0], d[1], d[2], d[3]
        for ti in range(n_tile_rows):
            row0 = (tr0 + ti) * 2 - pt
            for i in range(4):
                load_padded_row(x, n0 + b, c, row0 + i, -pl, d[i])
            t0 = (b * n_tile_rows + ti) * n_tile_cols
            for i in range(4):
                # row i of B^T d, for every column of the tile row at once
                if i == 0:
                    for j in range(span):
                        bt_d[j] = d0[j] - d2[j]
                elif i == 1:
                    for j in range(span):
                        bt_d[j] = d1[j] + d2[j]
                elif i == 2:
                    for j in range(span):
                        bt_d[j] = d2[j] - d1[j]
                else:
                    for j in range(span):
                        bt_d[j] = d1[j] - d3[j]
                for j in range(half):
                    even[j] = bt_d[2 * j]
                    odd[j] = bt_d[2 * j + 1]
                even1 = even[1:]
                odd1 = odd[1:]
                # (B^T d) B: e0 - e2, e1 + e2, e2 - e1, e1 - e3 of every tile
                v0 = v[i * 4 + 0, c, t0:t0 + n_tile_cols]
                v1 = v[i * 4 + 1, c, t0:t0 + n_tile_cols]
                v2 = v[i * 4 + 2, c, t0:t0 + n_tile_cols]
                v3 = v[i * 4 + 3, c, t0:t0 + n_tile_cols]
                for tj in range(n_tile_cols):
                    v0[tj] = even[tj] - even1[tj]
                for tj in range(n_tile_cols):
                    v1[tj] = odd[tj] + even1[tj]
                for tj in range(n_tile_cols):
                    v2[tj] = even1[tj] - odd[tj]
                for tj in range(n_tile_cols):
                    v3[tj] = odd[tj] - odd1[tj]


@njit(parallel=True, cache=True)
def output_transform(m, bias, y, n0, nb, tr0, n_tile_rows, n_tile_cols):
    """``Y = A^T m A`` (+ bias) for each tile, writing only outputs that exist.

    A tile row at a time, vectorized over its tiles: ``A^T m`` gives two rows
    of four values per tile (``s0q``, ``s1q``), ``(A^T m) A`` the even and odd
    output columns of each output row, which are then interleaved into ``y``.
    """
    k_total, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    full_pairs = out_w // 2
    for item in prange(nb * k_total):
        b = item // k_total
        k = item % k_total
        bk = bias[k]
        s = np.empty((4, n_tile_cols), dtype=y.dtype)
        even = np.empty(n_tile_cols, dtype=y.dtype)
        odd = np.empty(n_tile_cols, dtype=y.dtype)
        s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
        for ti in range(n_tile_rows):
            p = (tr0 + ti) * 2
            t0 = (b * n_tile_rows + ti) * n_tile_cols
            for r in range(2):
                if p + r >= out_h:
                    break
                # row r of A^T m: m[q] + m[4+q] + m[8+q], or m[4+q] - m[8+q] - m[12+q]
                for q in range(4):
                    sq = s[q]
                    ma = m[q + 4 * r, k, t0:t0 + n_tile_cols]
                    mb_ = m[q + 4 + 4 * r, k, t0:t0 + n_tile_cols]
                    mc = m[q + 8 + 4 * r, k, t0:t0 + n_tile_cols]
                    if r == 0:
                        for tj in range(n_tile_cols):
                            sq[tj] = ma[tj] + mb_[tj] + mc[tj]
                    else:
                        for tj in range(n_tile_cols):
                            sq[tj] = ma[tj] - mb_[tj] - mc[tj]
                # (A^T m) A (+ bias): the even and the odd output column of each tile
                for tj in range(n_tile_cols):
                    even[tj] = s0[tj] + s1[tj] + s2[tj] + bk
                for tj in range(n_tile_cols):
                    odd[tj] = s1[tj] - s2[tj] - s3[tj] + bk
                out = y[n0 + b, k, p + r]
                for tj in range(full_pairs):
                    out[2 * tj] = even[tj]
                    out[2 * tj + 1] = odd[tj]
                if out_w % 2:
                    out[out_w - 1] = even[full_pairs]


def planar_scratch_bytes(p: ConvProblem) -> int:
    """What the planar transforms allocate on Numba's threads at once: each thread's
    padded input rows, ``B^T d`` and its even and odd columns for a row of tiles."""
    _, cols = algorithm.tile_grid(p)
    return num_threads() * (12 * cols + 12) * p.itemsize


class WinogradKernel(CpuKernel):
    """Winograd F(2x2,3x3): 3x3 filters, stride 1, dilation 1; any padding and groups.

    Parameters
    ----------
    workspace_cap : int
        Upper bound on the bytes of ``U``, ``V`` and ``M`` for one block of tiles.
    layout : str, optional
        ``"channels-last"``, ``"planar"``, or ``"auto"`` (the default:
        channels-last where the input has enough channels, see
        :func:`kernels.cpu.winograd_channels_last.serves`).
    """

    name = "winograd"
    family = "winograd"
    uses_libraries = True
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    caches_weights = True  # U = G g G^T, once per weight tensor
    documented_refusals = (*CpuKernel.documented_refusals, algorithm.GEOMETRY_REFUSAL)
    #: The filter transform matrix ``G`` (a subclass may plant a fault here).
    filter_matrix = G
    #: Bytes of ``V`` and ``M`` a block of tiles aims at in the channels-last
    #: layout (None: as many as the cap allows).
    block_bytes: int | None = None

    def __init__(self, workspace_cap: int | None = None, layout: str = "auto") -> None:
        super().__init__(workspace_cap)
        self.layout = channels_last.checked_layout(layout)

    def problem_reason(self, p: ConvProblem) -> str | None:
        if p.dir != "fwd":
            return backward_algorithm.supports_backward(p)
        return algorithm.supports_geometry(p)

    def plan(self, p: ConvProblem) -> tuple[int, int, int]:
        """(images, tile rows, tile columns) per block of tiles."""
        if channels_last.serves(p, self.layout):
            return channels_last.plan_blocks(p, TILE_OUT, self.tiling_cap, self.block_bytes)
        return algorithm.plan_blocks(p, self.tiling_cap - planar_scratch_bytes(p), p.itemsize)

    def workspace_bytes(self, p: ConvProblem) -> int:
        """``U`` and one block's ``V`` and ``M`` (planar), with the transforms' own arrays;
        channels-last: :func:`kernels.cpu.winograd_channels_last.workspace_bytes`; and
        BLAS's allowance (:data:`~kernels.cpu.base.LIBRARY_BYTES`)."""
        if p.dir != "fwd":
            return winograd_backward.workspace_bytes(self, p)
        if channels_last.serves(p, self.layout):
            return self.with_libraries(channels_last.workspace_bytes(
                p, TILE_OUT, self.plan(p), self.tiling_cap))
        return self.with_libraries(algorithm.workspace_bytes(p, self.plan(p), p.itemsize)
                                   + planar_scratch_bytes(p))

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[..., np.ndarray]:
        if p.dir != "fwd":
            return winograd_backward.prepare_backward(self, p, x, w)
        g, cg = p.g, p.ic // p.g
        b = bias_or_zeros(p, bias)
        if channels_last.serves(p, self.layout):
            dtype = np.dtype(p.dtype)
            details = {"tile": "F(2x2,3x3)", "points": "standard"}
            u_gemm = channels_last.gemm_layout(filter_transform(w, g, self.filter_matrix))
            return channels_last.prepare_forward(p, TILE_OUT, A_T.astype(dtype),
                                                 B_T.astype(dtype), u_gemm, b, self.plan(p),
                                                 details, x, self.tiling_cap)
        u = filter_transform(w, g, self.filter_matrix)
        y = empty_output(p)
        nb, rows, cols = self.plan(p)
        tile_rows, _ = algorithm.tile_grid(p)
        # Flat buffers: a prefix viewed as (16, C, tiles) is contiguous for any
        # block size, so short last blocks need no copies.
        v_flat = np.empty(16 * p.ic * nb * rows * cols, dtype=p.dtype)
        m_flat = np.empty(16 * p.oc * nb * rows * cols, dtype=p.dtype)
        blocks = [(n0, min(nb, p.mb - n0), tr0, min(rows, tile_rows - tr0))
                  for n0 in range(0, p.mb, nb) for tr0 in range(0, tile_rows, rows)]

        def run(x: np.ndarray = x) -> np.ndarray:
            for n0, count, tr0, n_rows in blocks:
                tiles = count * n_rows * cols
                v = v_flat[:16 * p.ic * tiles].reshape(16, p.ic, tiles)
                m = m_flat[:16 * p.oc * tiles].reshape(16, p.oc, tiles)
                input_transform(x, v, n0, count, tr0, n_rows, cols, p.ph, p.pw)
                np.matmul(u, v.reshape(16, g, cg, tiles), out=m.reshape(16, g, p.oc // g, tiles))
                output_transform(m, b, y, n0, count, tr0, n_rows, cols)
            return y

        return run


assert (TILE_OUT, FILTER) == (2, 3), "the transforms above are written for F(2x2,3x3)"
KERNELS = [WinogradKernel()]
