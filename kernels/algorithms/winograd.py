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

import functools
from dataclasses import dataclass
from fractions import Fraction
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

#: The pattern of every reason :func:`supports_geometry`, :func:`supports_tile` and
#: :func:`kernels.algorithms.winograd_backward.supports_backward` refuse a problem with:
#: the Winograd kernels' documented refusals.
GEOMETRY_REFUSAL = r"^winograd .+ needs (a 3x3 filter|stride 1|dilation 1), got "


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


# ------------------------------------------- F(m x m, r x r) from interpolation points
#
# Lavin & Gray's construction (the Cook-Toom algorithm, transposed for
# correlation): the linear convolution of a length-m signal with a length-r
# filter is a polynomial product of degree alpha - 1 = m + r - 2, evaluated at
# alpha - 1 finite points and at infinity (the leading coefficient) and
# interpolated back. Transposing it gives correlation: ``A^T`` evaluates
# (a Vandermonde matrix), ``G`` evaluates the filter and carries the Lagrange
# denominators ("fractions in G"), ``B^T`` holds the Lagrange numerators.


@dataclass(frozen=True)
class WinogradTransforms:
    """``A^T`` (m x alpha), ``G`` (alpha x r) and ``B^T`` (alpha x alpha) of F(m, r).

    ``exact_*`` are the matrices in rationals; ``a_t``, ``g`` and ``b_t`` are
    them rounded to float64 once (each entry the nearest double).

    Attributes
    ----------
    m, r : int
        Output tile and filter size; ``alpha = m + r - 1`` is the input tile.
    points : tuple of Fraction
        The finite interpolation points (infinity is always the last one).
    name : str
        The point set's name (``"standard"``, ``"convbench"``, or ``"custom"``).
    """

    m: int
    r: int
    points: tuple[Fraction, ...]
    name: str
    exact_a_t: tuple[tuple[Fraction, ...], ...]
    exact_g: tuple[tuple[Fraction, ...], ...]
    exact_b_t: tuple[tuple[Fraction, ...], ...]

    @property
    def alpha(self) -> int:
        """Input tile size ``m + r - 1``."""
        return self.m + self.r - 1

    @property
    def label(self) -> str:
        """``F(4x4,3x3)``."""
        return f"F({self.m}x{self.m},{self.r}x{self.r})"

    @property
    def a_t(self) -> np.ndarray:
        return as_float_matrix(self.exact_a_t)

    @property
    def g(self) -> np.ndarray:
        return as_float_matrix(self.exact_g)

    @property
    def b_t(self) -> np.ndarray:
        return as_float_matrix(self.exact_b_t)

    def matrices(self, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(A^T, G, B^T)``, each entry the exact rational rounded once to ``dtype``."""
        return tuple(as_float_matrix(mat, dtype)
                     for mat in (self.exact_a_t, self.exact_g, self.exact_b_t))


def round_fraction(q: Fraction, dtype: Any = np.float64) -> float:
    """The ``dtype`` value nearest to the rational ``q`` (one rounding, not two).

    ``float(q)`` is correctly rounded to float64; rounding that again to
    float32 can be off by one unit in a halfway case, so the float32 result
    is chosen among its neighbours by exact distance.
    """
    dtype = np.dtype(dtype)
    nearest = dtype.type(float(q))
    if dtype == np.float64:
        return nearest
    candidates = (np.nextafter(nearest, dtype.type(-np.inf)), nearest,
                  np.nextafter(nearest, dtype.type(np.inf)))
    return min(candidates, key=lambda v: abs(Fraction(float(v)) - q))


def as_float_matrix(exact: tuple[tuple[Fraction, ...], ...], dtype: Any = np.float64
                    ) -> np.ndarray:
    """A rational matrix rounded entry by entry, once, to ``dtype``."""
    return np.array([[round_fraction(q, dtype) for q in row] for row in exact],
                    dtype=dtype)


def _poly_from_roots(roots: tuple[Fraction, ...]) -> list[Fraction]:
    """Coefficients, lowest order first, of the monic ``prod (x - a)`` over ``roots``."""
    coeffs = [Fraction(1)]
    for a in roots:
        shifted = [Fraction(0), *coeffs]  # x * p(x)
        coeffs = [s - a * c for s, c in zip(shifted, [*coeffs, Fraction(0)], strict=True)]
    return coeffs


def _lowest_sign(coeffs: list[Fraction]) -> int:
    """The sign of the lowest-order nonzero coefficient."""
    return 1 if next(c for c in coeffs if c != 0) > 0 else -1


def cook_toom(m: int, r: int, points: Any, name: str = "custom") -> WinogradTransforms:
    """The transforms of F(m, r) for the finite interpolation ``points`` (plus infinity).

    For the finite point ``a_j`` with ``N_j(x) = prod_{l != j} (x - a_l)`` and
    ``f_j = N_j(a_j)``: row ``j`` of ``B^T`` is ``N_j``'s coefficients, row
    ``j`` of ``G`` is ``(1, a_j, ..., a_j^{r-1}) / f_j`` and column ``j`` of
    ``A^T`` is ``(1, a_j, ..., a_j^{m-1})``. Infinity's row of ``B^T`` is the
    coefficients of ``prod_l (x - a_l)``, its row of ``G`` is ``(0, ..., 0, 1)``
    and its column of ``A^T`` is ``(0, ..., 0, 1)``. Sign convention (the one
    of Lavin & Gray's published matrices): the rows of ``B^T`` for the point 0
    and for infinity are negated where their lowest-order nonzero coefficient
    is negative, the sign moving into ``G``'s row (point 0) or ``A^T``'s column
    (infinity), so the algorithm is unchanged.

    Parameters
    ----------
    m, r : int
        Output tile and filter length (both >= 1).
    points : sequence of int, str or Fraction
        ``m + r - 2`` distinct finite points, e.g. ``(0, 1, -1, "1/2")``.
    name : str
        What to call the point set.

    Raises
    ------
    ValueError
        For the wrong number of points, or points that repeat.
    """
    if not (isinstance(m, int) and isinstance(r, int) and m >= 1 and r >= 1):
        raise ValueError(f"m and r must be positive ints, got m={m!r}, r={r!r}")
    pts = tuple(Fraction(a) for a in points)
    alpha = m + r - 1
    if len(pts) != alpha - 1:
        raise ValueError(f"F({m},{r}) needs {alpha - 1} finite points, got {len(pts)}: "
                         f"{[str(a) for a in pts]}")
    if len(set(pts)) != len(pts):
        raise ValueError(f"interpolation points must be distinct, got {[str(a) for a in pts]}")
    b_t, g = [], []
    for j, a in enumerate(pts):
        others = pts[:j] + pts[j + 1:]
        numerator = _poly_from_roots(others)
        f = Fraction(1)
        for other in others:
            f *= a - other
        sign = _lowest_sign(numerator) if a == 0 else 1
        b_t.append(tuple(sign * c for c in numerator) + (Fraction(0),))
        g.append(tuple(sign * a**k / f for k in range(r)))
    whole = _poly_from_roots(pts)
    sign_inf = _lowest_sign(whole)
    b_t.append(tuple(sign_inf * c for c in whole))
    g.append(tuple(Fraction(int(k == r - 1)) for k in range(r)))
    a_t = [tuple(a**i for a in pts) + (Fraction(sign_inf if i == m - 1 else 0),)
           for i in range(m)]
    return WinogradTransforms(m, r, pts, name, tuple(a_t), tuple(g), tuple(b_t))


#: Interpolation point sets per output tile ``m`` (filter 3). ``standard`` are
#: the points of Lavin & Gray (F(2,3), F(4,3)) and of NNPACK (F(6,3)).
#: ``convbench`` (F(6,3)) is what a search scored by measured float32 error
#: over VGG-16's 3x3 layers chose (``benchmarks/winograd_points.py``: every
#: symmetric set of small rationals, then a local search over single
#: replacements): no other points of small rationals beat
#: NNPACK's, and the winner is NNPACK's points in ascending order. The order
#: changes only the summation order of ``A^T M A`` (the rows of ``B^T`` and
#: ``G`` permute, each entry stays), which measured 1-8% lower ``rel_l2``;
#: the conditioning is the same.
POINT_SETS: dict[int, dict[str, tuple[str, ...]]] = {
    2: {"standard": ("0", "1", "-1")},
    4: {"standard": ("0", "1", "-1", "2", "-2")},
    6: {"standard": ("0", "1", "-1", "2", "-2", "1/2", "-1/2"),
        "convbench": ("-2", "-1", "-1/2", "0", "1/2", "1", "2")},
}
#: The point set each registered kernel uses.
DEFAULT_POINTS = {2: "standard", 4: "standard", 6: "convbench"}


@functools.cache
def tile_transforms(m: int, points: str | None = None, r: int = FILTER) -> WinogradTransforms:
    """F(m x m, 3x3)'s transforms for a named point set (default: :data:`DEFAULT_POINTS`).

    Raises
    ------
    ValueError
        For a tile or point-set name that :data:`POINT_SETS` does not hold.
    """
    if r != FILTER or m not in POINT_SETS:
        raise ValueError(f"point sets exist for F(m, 3) with m in {sorted(POINT_SETS)}, "
                         f"got F({m}, {r})")
    points = points or DEFAULT_POINTS[m]
    if points not in POINT_SETS[m]:
        raise ValueError(f"F({m},3) point sets are {sorted(POINT_SETS[m])}, got {points!r}")
    return cook_toom(m, r, POINT_SETS[m][points], points)


def supports_tile(p: ConvProblem, label: str) -> str | None:
    """Why a Winograd F(m x m, 3x3) labelled ``label`` cannot compute ``p``, or ``None``."""
    if (p.kh, p.kw) != (FILTER, FILTER):
        return f"winograd {label} needs a 3x3 filter, got {p.kh}x{p.kw}"
    if p.stride != (1, 1):
        return f"winograd {label} needs stride 1, got {p.stride}"
    if p.dilation != (1, 1):
        return f"winograd {label} needs dilation 1, got {p.dilation}"
    return None


def tile_grid_of(p: ConvProblem, m: int) -> tuple[int, int]:
    """Rows and columns of m x m output tiles per image (border tiles may stick out)."""
    return -(-p.oh // m), -(-p.ow // m)


def tiles_filter_bytes(p: ConvProblem, alpha: int, itemsize: int) -> int:
    """Bytes of ``U``: alpha^2 values per (k, c)."""
    return alpha * alpha * p.oc * (p.ic // p.g) * itemsize


def plan_tile_blocks(p: ConvProblem, m: int, cap: int, itemsize: int,
                     target: int | None = None,
                     scratch_per_row: int = 0) -> tuple[int, int, int]:
    """(images, tile rows, tile columns) per block whose ``V`` and ``M`` fit ``cap``.

    ``U`` is part of the workspace: blocks are planned within what it leaves.
    With a ``target``, blocks are kept to about ``max(target, bytes of U)``:
    small enough that a block's ``V`` and ``M`` stay in the last-level cache
    between the phases, large enough that reading ``U`` again for every
    block costs no more than the block's own ``V`` and ``M``.
    ``scratch_per_row`` is a backend's own bytes per tile row of a block (its
    transforms' temporaries), planned as part of the block.
    """
    alpha = m + FILTER - 1
    tile_rows, tile_cols = tile_grid_of(p, m)
    per_tile_row = alpha * alpha * (p.ic + p.oc) * tile_cols * itemsize + scratch_per_row
    u_bytes = tiles_filter_bytes(p, alpha, itemsize)
    budget = cap - u_bytes
    if target is not None:
        budget = min(budget, max(target, u_bytes))
    nb, rows = plan_tiles(p.mb, tile_rows, per_tile_row, budget)
    return nb, rows, tile_cols


def tiles_workspace_bytes(p: ConvProblem, m: int, block: tuple[int, int, int],
                          itemsize: int) -> int:
    """``V`` and ``M`` of one block of tiles, plus ``U``."""
    alpha = m + FILTER - 1
    nb, rows, cols = block
    return (alpha * alpha * (p.ic + p.oc) * nb * rows * cols * itemsize
            + tiles_filter_bytes(p, alpha, itemsize))


def winograd_conv2d(x: np.ndarray, w: np.ndarray, tf: WinogradTransforms,
                    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
                    groups: int = 1) -> np.ndarray:
    """Winograd convolution by the definition, in NumPy, in the dtype of ``x``.

    Every stage (``B^T d B``, ``G g G^T``, the products summed over channels,
    ``A^T M A``) is an ``einsum`` in ``x``'s dtype with the matrices rounded
    once to it: what the kernels compute, up to the order of the sums. For
    tests and for scoring point sets, not for speed.
    """
    dtype = x.dtype
    a_t, g_m, b_t = tf.matrices(dtype)
    m, alpha = tf.m, tf.alpha
    (pt, pb), (pl, pr) = padding
    n, c, h, wd = x.shape
    k = w.shape[0]
    oh, ow = h + pt + pb - tf.r + 1, wd + pl + pr - tf.r + 1
    rows, cols = -(-oh // m), -(-ow // m)
    padded = np.zeros((n, c, rows * m + alpha - m, cols * m + alpha - m), dtype=dtype)
    padded[:, :, pt:pt + h, pl:pl + wd] = x
    idx_r = (np.arange(rows) * m)[:, None] + np.arange(alpha)
    idx_c = (np.arange(cols) * m)[:, None] + np.arange(alpha)
    d = padded[:, :, idx_r[:, :, None, None], idx_c[None, None, :, :]]  # n c R a C b
    v = np.einsum("ia,ncRaCb,jb->ijncRC", b_t, d, b_t, optimize=True)
    u64 = np.einsum("ir,kcrs,js->ijkc", tf.g, w.astype(np.float64), tf.g)
    u = u64.astype(dtype)
    cg, kg = c // groups, k // groups
    v = v.reshape(alpha, alpha, n, groups, cg, rows, cols)
    u = u.reshape(alpha, alpha, groups, kg, cg)
    mm = np.einsum("ijgkc,ijngcRC->ijngkRC", u, v, optimize=True).reshape(
        alpha, alpha, n, k, rows, cols)
    y = np.einsum("pi,ijnkRC,qj->nkRpCq", a_t, mm, a_t, optimize=True).reshape(
        n, k, rows * m, cols * m)
    return np.ascontiguousarray(y[:, :, :oh, :ow])


def tiles_filter_transform(w: Any, groups: int, g_matrix: np.ndarray, xp: Any = np) -> Any:
    """``U = G g G^T`` for any ``G`` (alpha x r): shape ``(alpha^2, G, K/g, C/g)``.

    As :func:`filter_transform`: float64, rounded once to the dtype of ``w``;
    ``xp`` is NumPy or CuPy (where ``w`` lives).
    """
    g_matrix = np.asarray(g_matrix, dtype=np.float64)
    alpha = g_matrix.shape[0]
    if g_matrix.shape[1] != w.shape[2]:
        raise ValueError(f"G must be alpha x {w.shape[2]}, got {g_matrix.shape}")
    k, cg = w.shape[0], w.shape[1]
    g64 = xp.asarray(g_matrix)
    u = xp.einsum("ir,kcrs,js->ijkc", g64, w.astype(xp.float64), g64)
    return u.astype(w.dtype).reshape(alpha * alpha, groups, k // groups, cg)
