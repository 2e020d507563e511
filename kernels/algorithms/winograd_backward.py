"""Winograd backward passes of a 3x3, stride-1, dilation-1 layer (Lavin & Gray, 2016).

**Backward data** is a forward F(2x2,3x3) convolution of ``dy``: the
gradient of input pixel ``i`` is ``dx[i] = sum_r dy[i + p - r] w[r]``, a
cross-correlation of ``dy`` with the filter rotated by 180 degrees, input
and output channels swapped within each group, and padding ``2 - p`` on
every side (the bottom and right ones from the forward's, so asymmetric
padding carries over). Where ``p > 2`` the padding is negative: rows
``0 .. p-3`` of ``dy`` reach no input pixel, and the forward runs on ``dy``
cropped by them (:func:`data_crop`).

**Backward weights** is F(3x3,2x2): ``dw[r, s] = sum_(p,q) dy[p, q] x[p+r-pt,
q+s-pl]`` sums, over 2x2 blocks of ``dy``, the 3x3 correlation of a 4x4 input
tile with a 2x2 gradient tile, each of which is::

    dW_tile = A'^T [ (G' dy G'^T) (.) (B^T d B) ] A'

The transposition principle gives F(3,2) from F(2,3): the same ``B^T``,
``G' = A`` (4x2) and ``A'^T = G^T`` (3x4), so that the input tiles and their
transform are exactly the forward's (4x4 tiles at a stride of 2 over the
grid of ``dy``). The products are summed over tiles and images before the
output transform, as 16 GEMMs ``M[xi] = U[xi] V[xi]^T`` over the tiles
(``U = G' dy G'^T`` per (k, tile), ``V`` per (c, tile)), and ``dW = A'^T M
A'`` is applied once per (k, c).

The functions here compute the transforms from the matrices, in NumPy; the
Numba kernels write them out as additions and the tests hold them to these
definitions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbench.problem import ConvProblem

from .tiling import plan_tiles

#: F(2x2,3x3): output tile, filter, input tile.
TILE_OUT = 2
FILTER = 3
TILE_IN = 4

#: F(3x3,2x2) for backward weights: the input transform of F(2x2,3x3) ...
GRAD_B_T = np.array([[1, 0, -1, 0],
                     [0, 1, 1, 0],
                     [0, -1, 1, 0],
                     [0, 1, 0, -1]], dtype=np.float64)
#: ... the gradient-tile transform ``G' = A`` (A^T of F(2x2,3x3), transposed) ...
GRAD_G = np.array([[1, 0],
                   [1, 1],
                   [1, -1],
                   [0, -1]], dtype=np.float64)
#: ... and the output transform ``A'^T = G^T`` (G of F(2x2,3x3), transposed).
GRAD_A_T = np.array([[1, 0.5, 0.5, 0],
                     [0, 0.5, -0.5, 0],
                     [0, 0.5, 0.5, 1]], dtype=np.float64)


def supports_backward(p: ConvProblem) -> str | None:
    """Why Winograd cannot compute ``p``'s backward direction, or ``None``."""
    method = {"bwd_d": "bwd_d (F(2x2,3x3) on dy)",
              "bwd_w": "bwd_w (F(3x3,2x2))", "bwd_wb": "bwd_wb (F(3x3,2x2))"}.get(p.dir)
    if method is None:
        return f"winograd backward computes bwd_d, bwd_w and bwd_wb, got {p.dir}"
    if (p.kh, p.kw) != (FILTER, FILTER):
        return f"winograd {method} needs a 3x3 filter, got {p.kh}x{p.kw}"
    if p.stride != (1, 1):
        return f"winograd {method} needs stride 1, got {p.stride}"
    if p.dilation != (1, 1):
        return f"winograd {method} needs dilation 1, got {p.dilation}"
    return None


def data_crop(p: ConvProblem) -> tuple[int, int]:
    """Leading rows and columns of ``dy`` that reach no input pixel: ``max(0, pad - 2)``."""
    return max(0, p.ph - (FILTER - 1)), max(0, p.pw - (FILTER - 1))


def data_problem(p: ConvProblem) -> ConvProblem:
    """The forward F(2x2,3x3) problem that computes ``p``'s ``dx`` from (cropped) ``dy``.

    Input ``dy`` (N, K, P, Q) less :func:`data_crop`, filter rotated and
    swapped (C, K/g, 3, 3), top/left padding ``2 - p`` (0 after a crop), and
    the output size of ``x``, which implies the bottom/right padding ``2 - p``.
    """
    crop_h, crop_w = data_crop(p)
    return ConvProblem(mb=p.mb, ic=p.oc, ih=p.oh - crop_h, iw=p.ow - crop_w, oc=p.ic,
                       kh=FILTER, kw=FILTER, ph=max(0, FILTER - 1 - p.ph),
                       pw=max(0, FILTER - 1 - p.pw), g=p.g, oh=p.ih, ow=p.iw, dtype=p.dtype,
                       fpmath=p.fpmath, name=p.name)


def rotated_filter(w: Any, groups: int) -> Any:
    """``w`` (K, C/g, 3, 3) rotated by 180 degrees with C and K swapped per group.

    Returns a C-contiguous ``(C, K/g, 3, 3)`` array: ``out[g*C/g + c, k, r, s] =
    w[g*K/g + k, c, 2 - r, 2 - s]``. ``w`` is a NumPy or CuPy array.
    """
    k, cg, r, s = w.shape
    kg = k // groups
    rot = w.reshape(groups, kg, cg, r, s)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    return rot.reshape(groups * cg, kg, r, s).copy()


def weight_tile_grid(p: ConvProblem) -> tuple[int, int]:
    """Rows and columns of 2x2 gradient tiles covering ``dy`` (border tiles stick out)."""
    return -(-p.oh // TILE_OUT), -(-p.ow // TILE_OUT)


def weight_workspace_bytes(p: ConvProblem, block: tuple[int, int, int], itemsize: int) -> int:
    """``U`` and ``V`` of one block of tiles, plus the 16 GEMMs' sums ``M``."""
    nb, rows, cols = block
    return (16 * (p.ic + p.oc) * nb * rows * cols + 16 * p.oc * (p.ic // p.g)) * itemsize


def plan_weight_blocks(p: ConvProblem, cap: int, itemsize: int) -> tuple[int, int, int]:
    """(images, tile rows, tile columns) per block whose ``U`` and ``V`` fit the cap.

    ``M`` and one block's own sums beside it are part of the workspace too.
    """
    tile_rows, tile_cols = weight_tile_grid(p)
    per_row = 16 * (p.ic + p.oc) * tile_cols * itemsize
    nb, rows = plan_tiles(p.mb, tile_rows, per_row,
                          cap - 32 * p.oc * (p.ic // p.g) * itemsize)
    return nb, rows, tile_cols


def gradient_transform(dy_tiles: np.ndarray) -> np.ndarray:
    """``G' dy G'^T`` over the last two axes of gradient tiles (..., 2, 2): (..., 4, 4)."""
    return np.einsum("ia,...ab,jb->...ij", GRAD_G, dy_tiles, GRAD_G)


def input_transform(d: np.ndarray) -> np.ndarray:
    """``B^T d B`` over the last two axes of input tiles ``d`` (..., 4, 4)."""
    return np.einsum("ia,...ab,jb->...ij", GRAD_B_T, d, GRAD_B_T)


def weight_output_transform(m: Any, xp: Any = np) -> Any:
    """``A'^T m A'`` for ``m`` of shape (4, 4, ...): the 3x3 gradients, shape (..., 3, 3).

    In float64 (each value is a sum of up to 16 terms); the caller rounds once.
    """
    a_t = xp.asarray(GRAD_A_T)
    return xp.einsum("ri,ij...,sj->...rs", a_t, m.astype(xp.float64), a_t)
