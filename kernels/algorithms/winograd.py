"""Winograd F(2x2,3x3) convolution (Lavin & Gray, 2016): the transforms, the tiling, the bytes.

Each 2x2 output tile is computed from a 4x4 input tile ``d`` as::

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A

with the 16 element-wise products summed over input channels, i.e. done as 16
GEMMs ``M[xi,nu] = U[xi,nu] @ V[xi,nu]`` (``U = G g G^T`` per (k, c),
``V = B^T d B`` per (c, tile)). The functions here compute the transforms
from the paper's matrices, in NumPy (or CuPy, through ``xp``); the Numba and
CUDA kernels write the same transforms out as the additions they are, and
the tests hold them to these definitions.

Layout: ``V`` is ``(16, C, T)`` and ``M`` is ``(16, K, T)`` for ``T`` tiles
``t = (b*tile_rows + i)*tile_cols + j``, so ``U (16, G, K/g, C/g) @ V (16, G,
C/g, T)`` is one batched GEMM with no copies. Tiles cover whole images when
they fit the workspace cap, else bands of tile rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbench.problem import ConvProblem

from .tiling import plan_tiles

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


def supports_geometry(p: ConvProblem) -> str | None:
    """Why F(2x2,3x3) cannot compute ``p`` on any device, or ``None``."""
    if (p.kh, p.kw) != (FILTER, FILTER):
        return f"winograd F(2x2,3x3) needs a 3x3 filter, got {p.kh}x{p.kw}"
    if p.stride != (1, 1):
        return f"winograd F(2x2,3x3) needs stride 1, got {p.stride}"
    if p.dilation != (1, 1):
        return f"winograd F(2x2,3x3) needs dilation 1, got {p.dilation}"
    return None


def tile_grid(p: ConvProblem) -> tuple[int, int]:
    """Rows and columns of output tiles per image (border tiles may stick out)."""
    return -(-p.oh // TILE_OUT), -(-p.ow // TILE_OUT)


def filter_bytes(p: ConvProblem, itemsize: int) -> int:
    """Bytes of ``U``: 16 values per (k, c)."""
    return TILE_IN * TILE_IN * p.oc * (p.ic // p.g) * itemsize


def plan_blocks(p: ConvProblem, cap: int, itemsize: int) -> tuple[int, int, int]:
    """(images, tile rows, tile columns) per block of tiles whose ``V`` and ``M`` fit.

    ``U`` is part of the workspace too: blocks are planned within what it leaves.
    """
    tile_rows, tile_cols = tile_grid(p)
    bytes_per_tile_row = 16 * (p.ic + p.oc) * tile_cols * itemsize
    nb, rows = plan_tiles(p.mb, tile_rows, bytes_per_tile_row, cap - filter_bytes(p, itemsize))
    return nb, rows, tile_cols


def workspace_bytes(p: ConvProblem, block: tuple[int, int, int], itemsize: int) -> int:
    """``V`` and ``M`` of one block of tiles, plus ``U``."""
    nb, rows, cols = block
    return 16 * (p.ic + p.oc) * nb * rows * cols * itemsize + filter_bytes(p, itemsize)


def filter_transform(w: Any, groups: int, g_matrix: np.ndarray = G, xp: Any = np) -> Any:
    """``U = G g G^T`` for every (k, c): shape ``(16, G, K/g, C/g)``, dtype of ``w``.

    Computed in float64 and rounded once, so U is correctly rounded (up to the
    order of a 9-term float64 sum). ``xp`` is NumPy or CuPy (where ``w`` lives);
    ``g_matrix`` is the paper's ``G`` (other values only for fault injection).
    """
    g_matrix = np.asarray(g_matrix, dtype=np.float64)
    if g_matrix.shape != (TILE_IN, FILTER):
        raise ValueError(f"G must be {TILE_IN}x{FILTER}, got {g_matrix.shape}")
    k, cg = w.shape[0], w.shape[1]
    g64 = xp.asarray(g_matrix)
    u = xp.einsum("ir,kcrs,js->ijkc", g64, w.astype(xp.float64), g64)
    return u.astype(w.dtype).reshape(TILE_IN * TILE_IN, groups, k // groups, cg)


def input_transform(d: np.ndarray) -> np.ndarray:
    """``B^T d B`` over the last two axes of input tiles ``d`` (..., 4, 4)."""
    return np.einsum("ia,...ab,jb->...ij", B_T, d, B_T)


def output_transform(m: np.ndarray) -> np.ndarray:
    """``A^T m A`` over the last two axes of ``m`` (..., 4, 4): the 2x2 output tiles."""
    return np.einsum("pi,...ij,qj->...pq", A_T, m, A_T)
