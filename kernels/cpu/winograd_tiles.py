"""Winograd F(4x4,3x3) and F(6x6,3x3) on the CPU: Numba transforms and batched BLAS GEMMs.

The same three phases as F(2x2,3x3) (:mod:`kernels.cpu.winograd`), for any
output tile ``m`` and any interpolation points: the transforms are
:func:`kernels.algorithms.winograd.cook_toom`'s matrices, rounded once to the
problem's dtype, applied as scaled vector additions (a zero coefficient is
skipped). Two layouts:

- channels-last (:mod:`kernels.cpu.winograd_channels_last`), where the input
  has at least :data:`~kernels.cpu.winograd_channels_last.MIN_CHANNELS`
  channels: the transforms vectorize over channels;
- planar, for fewer channels: the transforms vectorize over all tiles of an
  image in a block, and the GEMM stage is one ``matmul`` of
  ``U (alpha^2, G, K/g, C/g)`` with ``V (alpha^2, G, C/g, T)``.

A depthwise layer's GEMM is an element-wise product. Border tiles read zeros
outside the image and write only the outputs that exist, so every padding
(asymmetric too) and every output size works.

Each call records its layout, its blocks and its phases' seconds in its
``details``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numba import njit, prange

from convbench.contract import ErrorModel, Prepared
from convbench.problem import ConvProblem

from ..algorithms import winograd as algorithm
from . import winograd_backward
from . import winograd_channels_last as channels_last
from .base import CpuKernel, bias_or_zeros, empty_output, num_threads
from .winograd import load_padded_row


def filter_transform(w: np.ndarray, groups: int, g_matrix: np.ndarray) -> np.ndarray:
    """``U = G g G^T`` for every (k, c): shape ``(alpha^2, G, K/g, C/g)``, dtype of ``w``.

    Computed in float64 and rounded once (``g_matrix`` is float64).
    """
    k, cg = w.shape[0], w.shape[1]
    g_matrix = np.ascontiguousarray(g_matrix, dtype=np.float64)
    alpha = g_matrix.shape[0]
    if g_matrix.shape[1] != w.shape[2] or w.shape[2] != w.shape[3]:
        raise ValueError(f"G must be alpha x {w.shape[2]}, got {g_matrix.shape}")
    u = np.empty((alpha, alpha, k, cg), dtype=w.dtype)
    sandwich_product(w, g_matrix, u)
    return u.reshape(alpha * alpha, groups, k // groups, cg)


@njit(parallel=True, cache=True)
def sandwich_product(w, g_matrix, u):
    """``u[i, j, k, c] = sum_r sum_s G[i, r] w[k, c, r, s] G[j, s]`` in float64, rounded once."""
    n_k, n_c = w.shape[0], w.shape[1]
    alpha, taps = g_matrix.shape
    for k in prange(n_k):
        t = np.empty((alpha, taps))
        for c in range(n_c):
            for i in range(alpha):
                for s in range(taps):
                    acc = 0.0
                    for r in range(taps):
                        acc += g_matrix[i, r] * np.float64(w[k, c, r, s])
                    t[i, s] = acc
            for i in range(alpha):
                for j in range(alpha):
                    acc = 0.0
                    for s in range(taps):
                        acc += t[i, s] * g_matrix[j, s]
                    u[i, j, k, c] = acc


# Every transform loop runs over the tiles of one image in the block at once
# (unit-stride 1-D views of length rows x cols, indices >= 0), which LLVM
# vectorizes: the input tiles of a channel are first gathered into
# ``d[a, b, t]`` (the zero padding written there), then ``B^T d`` and
# ``(B^T d) B`` are scaled vector additions over ``t``; the output transform
# likewise computes ``A^T M A`` over ``t`` and scatters the tiles into ``y``.


@njit(parallel=True, cache=True)
def input_transform(x, v, b_t, m, n0, nb, tr0, n_tile_rows, n_tile_cols, pt, pl):
    """``V = B^T d B`` for the tiles of images ``n0:n0+nb``, tile rows ``tr0:+n``.

    ``v`` has shape ``(alpha^2, C, T)``, tile ``t = (b*rows + i)*cols + j``;
    ``b_t`` is ``B^T`` in the dtype of ``x``.
    """
    alpha = b_t.shape[0]
    channels = x.shape[1]
    span = m * n_tile_cols + alpha - m  # input columns under one row of tiles
    per_image = n_tile_rows * n_tile_cols
    for item in prange(nb * channels):
        b = item // channels
        c = item % channels
        row = np.empty(span, dtype=x.dtype)
        d = np.empty((alpha, alpha, per_image), dtype=x.dtype)
        btd = np.empty((alpha, per_image), dtype=x.dtype)
        for ti in range(n_tile_rows):
            row0 = (tr0 + ti) * m - pt
            for a in range(alpha):
                load_padded_row(x, n0 + b, c, row0 + a, -pl, row)
                for e in range(alpha):
                    dst = d[a, e, ti * n_tile_cols:(ti + 1) * n_tile_cols]
                    src = row[e:e + m * (n_tile_cols - 1) + 1:m]
                    for tj in range(n_tile_cols):
                        dst[tj] = src[tj]
        t0 = b * per_image
        for e in range(alpha):  # column e of B^T d, for every tile
            for xi in range(alpha):
                out = btd[xi]
                for t in range(per_image):
                    out[t] = 0
                for a in range(alpha):
                    coef = b_t[xi, a]
                    if coef != 0:
                        src = d[a, e]
                        for t in range(per_image):
                            out[t] += coef * src[t]
            for xi in range(alpha):  # stored back over d[xi, e]: d[a, e] is no longer read
                src = btd[xi]
                dst = d[xi, e]
                for t in range(per_image):
                    dst[t] = src[t]
        for xi in range(alpha):  # (B^T d) B
            for nu in range(alpha):
                out = v[xi * alpha + nu, c, t0:t0 + per_image]
                for t in range(per_image):
                    out[t] = 0
                for e in range(alpha):
                    coef = b_t[nu, e]
                    if coef != 0:
                        src = d[xi, e]
                        for t in range(per_image):
                            out[t] += coef * src[t]


@njit(parallel=True, cache=True)
def output_transform(mm, a_t, bias, y, n0, nb, tr0, n_tile_rows, n_tile_cols):
    """``Y = A^T M A`` (+ bias) for each tile, writing only the outputs that exist.

    ``mm`` has shape ``(alpha^2, K, T)``; ``a_t`` is ``A^T`` in the dtype of ``y``.
    """
    m, alpha = a_t.shape
    k_total, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    per_image = n_tile_rows * n_tile_cols
    for item in prange(nb * k_total):
        b = item // k_total
        k = item % k_total
        bk = bias[k]
        t0 = b * per_image
        s = np.empty((alpha, per_image), dtype=y.dtype)
        tile = np.empty((m, per_image), dtype=y.dtype)
        for p in range(m):
            for nu in range(alpha):  # row p of A^T M, column nu, for every tile
                acc = s[nu]
                for t in range(per_image):
                    acc[t] = 0
                for xi in range(alpha):
                    coef = a_t[p, xi]
                    if coef != 0:
                        src = mm[xi * alpha + nu, k, t0:t0 + per_image]
                        for t in range(per_image):
                            acc[t] += coef * src[t]
            for q in range(m):  # (A^T M) A, + bias
                out_q = tile[q]
                for t in range(per_image):
                    out_q[t] = 0
                for nu in range(alpha):
                    coef = a_t[q, nu]
                    if coef != 0:
                        src = s[nu]
                        for t in range(per_image):
                            out_q[t] += coef * src[t]
                for t in range(per_image):
                    out_q[t] += bk
            for ti in range(n_tile_rows):
                row = (tr0 + ti) * m + p
                if row >= out_h:
                    break
                out = y[n0 + b, k, row]
                for q in range(m):
                    width = (out_w - q + m - 1) // m  # tiles whose column q exists
                    if width > n_tile_cols:
                        width = n_tile_cols
                    src = tile[q, ti * n_tile_cols:ti * n_tile_cols + width]
                    dst = out[q:q + m * (width - 1) + 1:m]
                    for tj in range(width):
                        dst[tj] = src[tj]


def planar_scratch_bytes(p: ConvProblem, m: int) -> tuple[int, int]:
    """What the planar transforms allocate on Numba's threads at once: per tile row of a
    block (each thread's input tiles gathered, ``d`` and ``B^T d``, or the output's ``A^T M``
    and its tiles, over the block's tiles of an image), and besides (a padded input row)."""
    alpha = m + 2
    _, cols = algorithm.tile_grid_of(p, m)
    threads = num_threads()
    per_row = threads * max(alpha * alpha + alpha, alpha + m) * cols * p.itemsize
    return per_row, threads * (cols * m + alpha) * p.itemsize


class WinogradTileKernel(CpuKernel):
    """Winograd F(m x m, 3x3) from interpolation points: 3x3 filters, stride 1, dilation 1.

    Any padding (asymmetric too), groups, depthwise, any image size.

    Parameters
    ----------
    workspace_cap : int
        Upper bound on the bytes of ``U``, ``V`` and ``M`` for one block of tiles.
    points : str, optional
        A point set of :data:`kernels.algorithms.winograd.POINT_SETS` for this
        tile (default: :data:`~kernels.algorithms.winograd.DEFAULT_POINTS`).
    layout : str, optional
        ``"channels-last"``, ``"planar"``, or ``"auto"`` (the default:
        channels-last where the input has enough channels, see
        :func:`kernels.cpu.winograd_channels_last.serves`).
    """

    family = "winograd"
    uses_libraries = True
    #: bwd_d is this kernel's forward pass on ``dy`` with the rotated, swapped filter
    #: (:func:`kernels.cpu.winograd_backward.prepare_backward`).
    directions = ("fwd", "bwd_d")
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    caches_weights = True  # U = G g G^T, once per weight tensor
    documented_refusals = (*CpuKernel.documented_refusals, algorithm.GEOMETRY_REFUSAL)
    #: Output tile m of F(m x m, 3x3).
    tile = 4
    #: Bytes of ``V`` and ``M`` a block of tiles aims at (None: as many as the cap allows);
    #: see :func:`kernels.algorithms.winograd.plan_tile_blocks`.
    block_bytes: int | None = None

    def __init__(self, workspace_cap: int | None = None, points: str | None = None,
                 layout: str = "auto") -> None:
        super().__init__(workspace_cap)
        self.transforms = algorithm.tile_transforms(self.tile, points)
        self.layout = channels_last.checked_layout(layout)

    @property
    def label(self) -> str:
        return self.transforms.label

    def matrices(self, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(A^T, B^T)`` in ``dtype`` and ``G`` in float64, as the kernel uses them.

        A subclass may plant a fault here.
        """
        a_t, _, b_t = self.transforms.matrices(dtype)
        return a_t, self.transforms.g, b_t

    def problem_reason(self, p: ConvProblem) -> str | None:
        if p.dir == "bwd_d":
            return algorithm.supports_tile(p, f"{self.label} bwd_d (on dy)")
        return algorithm.supports_tile(p, self.label)

    def error_model(self, p: ConvProblem) -> ErrorModel:
        # The point set's own matrices: what a correct kernel computes.
        tf = self.transforms
        return ErrorModel("winograd", transforms=(tf.a_t, tf.g, tf.b_t))

    def math_mode(self, p: ConvProblem) -> str:
        return f"{super().math_mode(p)}, {self.label} {self.transforms.name} points"

    def plan(self, p: ConvProblem) -> tuple[int, int, int]:
        """(images, tile rows, tile columns) per block of tiles."""
        if channels_last.serves(p, self.layout):
            return channels_last.plan_blocks(p, self.tile, self.tiling_cap, self.block_bytes)
        rows_scratch, fixed_scratch = planar_scratch_bytes(p, self.tile)
        return algorithm.plan_tile_blocks(p, self.tile, self.tiling_cap - fixed_scratch,
                                          p.itemsize, self.block_bytes, rows_scratch)

    def workspace_bytes(self, p: ConvProblem) -> int:
        """``U`` and one block's ``V`` and ``M`` (planar), with the transforms' own arrays;
        channels-last: :func:`kernels.cpu.winograd_channels_last.workspace_bytes`; and
        BLAS's allowance (:data:`~kernels.cpu.base.LIBRARY_BYTES`)."""
        if p.dir == "bwd_d":
            return winograd_backward.workspace_bytes(self, p)
        if channels_last.serves(p, self.layout):
            return self.with_libraries(channels_last.workspace_bytes(
                p, self.tile, self.plan(p), self.tiling_cap))
        block = self.plan(p)
        rows_scratch, fixed_scratch = planar_scratch_bytes(p, self.tile)
        return self.with_libraries(algorithm.tiles_workspace_bytes(p, self.tile, block,
                                                                   p.itemsize)
                                   + block[1] * rows_scratch + fixed_scratch)

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[..., np.ndarray]:
        if p.dir == "bwd_d":
            return winograd_backward.prepare_backward(self, p, x, w)
        m = self.tile
        a_t, g_matrix, b_t = self.matrices(p.dtype)
        alpha = b_t.shape[0]
        a2 = alpha * alpha
        g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
        details = {"tile": self.label, "points": self.transforms.name,
                   "points_values": [str(a) for a in self.transforms.points]}
        if channels_last.serves(p, self.layout):
            u_gemm = channels_last.gemm_layout(filter_transform(w, g, g_matrix))
            return channels_last.prepare_forward(p, m, a_t, b_t, u_gemm, bias_or_zeros(p, bias),
                                                 self.plan(p), details, x,
                                                 self.tiling_cap)
        u = filter_transform(w, g, g_matrix)
        depthwise_like = cg == 1
        if depthwise_like:
            u = np.ascontiguousarray(u.reshape(a2, g, kg, 1))
        y = empty_output(p)
        bias_vec = bias_or_zeros(p, bias)
        nb, rows, cols = self.plan(p)
        tile_rows, _ = algorithm.tile_grid_of(p, m)
        v_flat = np.empty(a2 * p.ic * nb * rows * cols, dtype=p.dtype)
        m_flat = np.empty(a2 * p.oc * nb * rows * cols, dtype=p.dtype)
        blocks = [(n0, min(nb, p.mb - n0), tr0, min(rows, tile_rows - tr0))
                  for n0 in range(0, p.mb, nb) for tr0 in range(0, tile_rows, rows)]
        phases = {"input_transform": 0.0, "gemm": 0.0, "output_transform": 0.0}
        # The last call's seconds per phase (a fresh dict each call: a record keeps its own).
        details = {**details, "layout": "planar", "blocks": len(blocks),
                   "phase_s": dict(phases)}
        clock = time.perf_counter

        def run(x: np.ndarray = x) -> np.ndarray:
            t_in = t_gemm = t_out = 0.0
            for n0, count, tr0, n_rows in blocks:
                tiles = count * n_rows * cols
                v = v_flat[:a2 * p.ic * tiles].reshape(a2, p.ic, tiles)
                mm = m_flat[:a2 * p.oc * tiles].reshape(a2, p.oc, tiles)
                t0 = clock()
                input_transform(x, v, b_t, m, n0, count, tr0, n_rows, cols, p.ph, p.pw)
                t1 = clock()
                if depthwise_like:
                    np.multiply(u, v.reshape(a2, g, 1, tiles), out=mm.reshape(a2, g, kg, tiles))
                else:
                    np.matmul(u, v.reshape(a2, g, cg, tiles), out=mm.reshape(a2, g, kg, tiles))
                t2 = clock()
                output_transform(mm, a_t, bias_vec, y, n0, count, tr0, n_rows, cols)
                t3 = clock()
                t_in += t1 - t0
                t_gemm += t2 - t1
                t_out += t3 - t2
            prepared.details["phase_s"] = {"input_transform": t_in, "gemm": t_gemm,
                                           "output_transform": t_out}
            return y

        prepared = Prepared(run, details)  # it copies details: run updates its own
        return prepared


class Winograd4x4Kernel(WinogradTileKernel):
    """Winograd F(4x4,3x3) (Lavin & Gray's points 0, 1, -1, 2, -2, infinity)."""

    name = "winograd_4x4"
    tile = 4


class Winograd6x6Kernel(WinogradTileKernel):
    """Winograd F(6x6,3x3) (convbench's points by default; NNPACK's as ``"standard"``)."""

    name = "winograd_6x6"
    tile = 6


KERNELS = [Winograd4x4Kernel(), Winograd6x6Kernel()]
