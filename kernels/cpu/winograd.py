"""Winograd F(2x2,3x3) convolution (Lavin & Gray, 2016), compiled with Numba.

Each 2x2 output tile is computed from a 4x4 input tile ``d`` as::

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A

with the 16 element-wise products summed over input channels, i.e. done as
16 GEMMs ``M[xi,nu] = U[xi,nu] @ V[xi,nu]`` (``U = G g G^T`` per (k, c),
``V = B^T d B`` per (c, tile)). The transforms are written out as the
additions they are (no multiplications by 0 or 1), so a NaN or Inf reaches
exactly the outputs whose window contains it, as in the reference.

Layout: ``V`` is ``(16, C, T)`` and ``M`` is ``(16, K, T)`` for ``T`` tiles, so
``U (16, G, K/g, C/g) @ V (16, G, C/g, T)`` is one batched ``numpy.matmul``
with no copies. Tiles cover whole images when they fit the workspace cap,
else bands of tile rows. Border tiles read zeros outside the image and write
only the outputs that exist (odd P or Q).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, prange

from convbench.problem import ConvProblem
from kernels.cpu.common import WORKSPACE_CAP_BYTES, cpu_dtype_reason, empty_output, plan_tiles

#: F(m x m, r x r): output tile m, filter r, input tile alpha = m + r - 1.
TILE_OUT = 2
FILTER = 3
TILE_IN = TILE_OUT + FILTER - 1

#: The paper's transform matrices, for F(2, 3).
B_T = np.array([[1, 0, -1, 0],
                [0, 1, 1, 0],
                [0, -1, 1, 0],
                [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0],
              [0.5, 0.5, 0.5],
              [0.5, -0.5, 0.5],
              [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0],
                [0, 1, -1, -1]], dtype=np.float64)


def filter_transform(w: np.ndarray, groups: int, g_matrix: np.ndarray = G) -> np.ndarray:
    """``U = G g G^T`` for every (k, c): shape ``(16, G, K/g, C/g)``, dtype of ``w``.

    Computed in float64 and rounded once, so U is correctly rounded.
    ``g_matrix`` is the paper's ``G`` (other values only for fault-injection tests).
    """
    k, cg = w.shape[0], w.shape[1]
    u = np.einsum("ir,kcrs,js->ijkc", g_matrix, w.astype(np.float64), g_matrix,
                  optimize=True)
    return np.ascontiguousarray(
        u.reshape(TILE_IN * TILE_IN, groups, k // groups, cg).astype(w.dtype))


@njit(parallel=True, cache=True)
def input_transform(x, v, n0, nb, tr0, n_tile_rows, n_tile_cols, pt, pl):
    """``V = B^T d B`` for the tiles of images ``n0:n0+nb``, tile rows ``tr0:+n``.

    ``v`` has shape ``(16, C, T)`` with tile index ``t = (b*rows + i)*cols + j``.
    """
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    d = np.empty((nb * channels, 4, 4), dtype=x.dtype)
    for item in prange(nb * channels):
        b = item // channels
        c = item % channels
        dt = d[item]
        for ti in range(n_tile_rows):
            row0 = (tr0 + ti) * 2 - pt
            for tj in range(n_tile_cols):
                col0 = tj * 2 - pl
                for i in range(4):
                    row = row0 + i
                    for j in range(4):
                        col = col0 + j
                        if 0 <= row < height and 0 <= col < width:
                            dt[i, j] = x[n0 + b, c, row, col]
                        else:
                            dt[i, j] = 0
                # B^T d: rows
                for j in range(4):
                    d0, d1, d2, d3 = dt[0, j], dt[1, j], dt[2, j], dt[3, j]
                    dt[0, j] = d0 - d2
                    dt[1, j] = d1 + d2
                    dt[2, j] = d2 - d1
                    dt[3, j] = d1 - d3
                # (B^T d) B: columns
                t = (b * n_tile_rows + ti) * n_tile_cols + tj
                for i in range(4):
                    e0, e1, e2, e3 = dt[i, 0], dt[i, 1], dt[i, 2], dt[i, 3]
                    v[i * 4 + 0, c, t] = e0 - e2
                    v[i * 4 + 1, c, t] = e1 + e2
                    v[i * 4 + 2, c, t] = e2 - e1
                    v[i * 4 + 3, c, t] = e1 - e3


@njit(parallel=True, cache=True)
def output_transform(m, bias, y, n0, nb, tr0, n_tile_rows, n_tile_cols):
    """``Y = A^T m A`` (+ bias) for each tile, writing only outputs that exist."""
    k_total, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    for item in prange(nb * k_total):
        b = item // k_total
        k = item % k_total
        bk = bias[k]
        for ti in range(n_tile_rows):
            p = (tr0 + ti) * 2
            for tj in range(n_tile_cols):
                q = tj * 2
                t = (b * n_tile_rows + ti) * n_tile_cols + tj
                # A^T m: rows 0..3 -> 2 rows, per column j
                s00 = m[0, k, t] + m[4, k, t] + m[8, k, t]
                s01 = m[1, k, t] + m[5, k, t] + m[9, k, t]
                s02 = m[2, k, t] + m[6, k, t] + m[10, k, t]
                s03 = m[3, k, t] + m[7, k, t] + m[11, k, t]
                s10 = m[4, k, t] - m[8, k, t] - m[12, k, t]
                s11 = m[5, k, t] - m[9, k, t] - m[13, k, t]
                s12 = m[6, k, t] - m[10, k, t] - m[14, k, t]
                s13 = m[7, k, t] - m[11, k, t] - m[15, k, t]
                # (A^T m) A
                y[n0 + b, k, p, q] = s00 + s01 + s02 + bk
                if q + 1 < out_w:
                    y[n0 + b, k, p, q + 1] = s01 - s02 - s03 + bk
                if p + 1 < out_h:
                    y[n0 + b, k, p + 1, q] = s10 + s11 + s12 + bk
                    if q + 1 < out_w:
                        y[n0 + b, k, p + 1, q + 1] = s11 - s12 - s13 + bk


class WinogradKernel:
    """Winograd F(2x2,3x3): 3x3 filters, stride 1, dilation 1; any padding and groups.

    Parameters
    ----------
    workspace_cap : int
        Upper bound on the bytes of ``V`` and ``M`` for one block of tiles.
    """

    name = "winograd"
    backend = "cpu"
    kind = "kernel"
    #: ``prepare`` computes ``U = G g G^T`` once per weight tensor.
    pretransforms_weights = True
    #: The filter transform matrix ``G`` (a subclass may plant a fault here).
    filter_matrix = G

    def __init__(self, workspace_cap: int = WORKSPACE_CAP_BYTES) -> None:
        self.workspace_cap = workspace_cap

    @staticmethod
    def supports_geometry(p: ConvProblem) -> str | None:
        """Why F(2x2,3x3) cannot compute ``p`` on any device, or ``None``."""
        if (p.kh, p.kw) != (FILTER, FILTER):
            return f"winograd F(2x2,3x3) needs a 3x3 filter, got {p.kh}x{p.kw}"
        if p.stride != (1, 1):
            return f"winograd F(2x2,3x3) needs stride 1, got {p.stride}"
        if p.dilation != (1, 1):
            return f"winograd F(2x2,3x3) needs dilation 1, got {p.dilation}"
        return None

    def supports(self, p: ConvProblem) -> str | None:
        return self.supports_geometry(p) or cpu_dtype_reason(p)

    def _plan(self, p: ConvProblem) -> tuple[int, int, int]:
        tile_rows = -(-p.oh // TILE_OUT)
        tile_cols = -(-p.ow // TILE_OUT)
        bytes_per_tile_row = 16 * (p.ic + p.oc) * tile_cols * p.itemsize
        # The transformed filter U is part of the workspace too: tile within what is left.
        budget = self.workspace_cap - self._filter_bytes(p)
        nb, rows = plan_tiles(p.mb, tile_rows, bytes_per_tile_row, budget)
        return nb, rows, tile_cols

    @staticmethod
    def _filter_bytes(p: ConvProblem) -> int:
        return TILE_IN * TILE_IN * p.oc * (p.ic // p.g) * p.itemsize

    def workspace_bytes(self, p: ConvProblem) -> int:
        nb, rows, cols = self._plan(p)
        return 16 * (p.ic + p.oc) * nb * rows * cols * p.itemsize + self._filter_bytes(p)

    def prepare(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                bias: np.ndarray | None) -> Callable[[], np.ndarray]:
        reason = self.supports(p)
        if reason:
            from convbench.errors import UnsupportedProblem  # noqa: PLC0415

            raise UnsupportedProblem(reason)
        g, cg = p.g, p.ic // p.g
        u = filter_transform(w, g, self.filter_matrix)
        y = empty_output(p)
        b = bias if bias is not None else np.zeros(p.oc, dtype=p.dtype)
        nb, rows, cols = self._plan(p)
        tile_rows = -(-p.oh // TILE_OUT)
        # Flat buffers: a prefix viewed as (16, C, tiles) is contiguous for any
        # block size, so short last blocks need no copies.
        v_flat = np.empty(16 * p.ic * nb * rows * cols, dtype=p.dtype)
        m_flat = np.empty(16 * p.oc * nb * rows * cols, dtype=p.dtype)
        blocks = [(n0, min(nb, p.mb - n0), tr0, min(rows, tile_rows - tr0))
                  for n0 in range(0, p.mb, nb) for tr0 in range(0, tile_rows, rows)]

        def run() -> np.ndarray:
            for n0, count, tr0, n_rows in blocks:
                tiles = count * n_rows * cols
                v = v_flat[:16 * p.ic * tiles].reshape(16, p.ic, tiles)
                m = m_flat[:16 * p.oc * tiles].reshape(16, p.oc, tiles)
                input_transform(x, v, n0, count, tr0, n_rows, cols, p.ph, p.pw)
                np.matmul(u, v.reshape(16, g, cg, tiles), out=m.reshape(16, g, p.oc // g, tiles))
                output_transform(m, b, y, n0, count, tr0, n_rows, cols)
            return y

        return run


KERNEL = WinogradKernel()
KERNELS = [KERNEL]
