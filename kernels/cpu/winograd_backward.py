"""Winograd backward passes on the CPU: bwd_d through the forward kernel, bwd_w in F(3x3,2x2).

The math is :mod:`kernels.algorithms.winograd_backward`'s.

* **bwd_d** prepares the forward Winograd kernel on the transposed problem
  (:func:`~kernels.algorithms.winograd_backward.data_problem`): the rotated,
  swapped filter is transformed once, and each call is that kernel's call on
  ``dy``: its input transform, batched GEMMs and output transform, at the
  forward's speed.
* **bwd_w** writes ``V = B^T d B`` (:func:`input_tiles`) and ``U = G' dy G'^T``
  (:func:`gradient_tiles`) per block of tiles, sums ``M[xi] = U[xi] V[xi]^T``
  over the blocks with one batched BLAS GEMM each, and applies ``A'^T M A'``
  once, in float64, rounded once (the output transform both layouts share,
  :func:`kernels.cpu.winograd_weights_channels_last.weight_output_transform`).
  The transforms are additions, so a NaN or Inf reaches exactly the
  gradients whose sums contain it. Layers with at least 16 input and output
  channels per group take the channels-last version of the same steps
  (:mod:`kernels.cpu.winograd_weights_channels_last`); this module's planar
  one serves the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange

from convbench.contract import Prepared
from convbench.problem import ConvProblem
from convbench.problem.arguments import aligned_empty

from ..algorithms import winograd_backward as algorithm
from . import winograd_weights_channels_last as weights_channels_last
from .fft import bias_gradient


@njit(parallel=True, cache=True)
def input_tiles(x, v, n0, nb, tr0, n_tile_rows, n_tile_cols, pt, pl):
    """``V = B^T d B`` of the 4x4 input tiles at ``(2 ti - pt, 2 tj - pl)``, zero off the image.

    ``v`` is ``(16, C, T)`` with tile ``t = (b*rows + i)*cols + j`` for images
    ``n0:n0+nb`` and tile rows ``tr0:tr0+rows``.
    """
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    for item in prange(nb * channels):
        b = item // channels
        c = item % channels
        d = np.empty((4, 4), dtype=x.dtype)
        e = np.empty((4, 4), dtype=x.dtype)
        for ti in range(n_tile_rows):
            row0 = (tr0 + ti) * 2 - pt
            for tj in range(n_tile_cols):
                col0 = tj * 2 - pl
                for a in range(4):
                    row = row0 + a
                    for f in range(4):
                        col = col0 + f
                        inside = 0 <= row < height and 0 <= col < width
                        d[a, f] = x[n0 + b, c, row, col] if inside else 0
                for f in range(4):  # B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
                    e[0, f] = d[0, f] - d[2, f]
                    e[1, f] = d[1, f] + d[2, f]
                    e[2, f] = d[2, f] - d[1, f]
                    e[3, f] = d[1, f] - d[3, f]
                t = (b * n_tile_rows + ti) * n_tile_cols + tj
                for a in range(4):  # (B^T d) B: the same on the columns
                    v[4 * a + 0, c, t] = e[a, 0] - e[a, 2]
                    v[4 * a + 1, c, t] = e[a, 1] + e[a, 2]
                    v[4 * a + 2, c, t] = e[a, 2] - e[a, 1]
                    v[4 * a + 3, c, t] = e[a, 1] - e[a, 3]


@njit(parallel=True, cache=True)
def gradient_tiles(dy, u, n0, nb, tr0, n_tile_rows, n_tile_cols):
    """``U = G' dy G'^T`` of the 2x2 gradient tiles, zero past ``dy``'s last row or column.

    ``G'`` maps ``(a0, a1)`` to ``(a0, a0 + a1, a0 - a1, -a1)``.
    """
    k_total, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    for item in prange(nb * k_total):
        b = item // k_total
        k = item % k_total
        d = np.empty((2, 2), dtype=dy.dtype)
        e = np.empty((4, 2), dtype=dy.dtype)
        for ti in range(n_tile_rows):
            row0 = (tr0 + ti) * 2
            for tj in range(n_tile_cols):
                col0 = tj * 2
                for a in range(2):
                    for f in range(2):
                        inside = row0 + a < out_h and col0 + f < out_w
                        d[a, f] = dy[n0 + b, k, row0 + a, col0 + f] if inside else 0
                for f in range(2):
                    e[0, f] = d[0, f]
                    e[1, f] = d[0, f] + d[1, f]
                    e[2, f] = d[0, f] - d[1, f]
                    e[3, f] = -d[1, f]
                t = (b * n_tile_rows + ti) * n_tile_cols + tj
                for a in range(4):
                    u[4 * a + 0, k, t] = e[a, 0]
                    u[4 * a + 1, k, t] = e[a, 0] + e[a, 1]
                    u[4 * a + 2, k, t] = e[a, 0] - e[a, 1]
                    u[4 * a + 3, k, t] = -e[a, 1]


def plan_weight_blocks(p: ConvProblem, cap: int) -> tuple[int, int, int]:
    """(images, tile rows, tile columns) per block of bwd_w (see the algorithm's), within
    what the output transform's rows leave of ``cap``."""
    return algorithm.plan_weight_blocks(p, cap - weights_channels_last.output_scratch_bytes(p),
                                        p.itemsize)


def data_extra_bytes(p: ConvProblem) -> int:
    """What bwd_d holds beside the forward kernel's workspace: the rotated filter (in
    ``prepare``) and, where the padding is over 2, the cropped ``dy``."""
    forward_problem = algorithm.data_problem(p)
    cropped = algorithm.data_crop(p) != (0, 0)
    rotated = p.oc * (p.ic // p.g) * p.kh * p.kw * p.itemsize
    return rotated + (forward_problem.mb * forward_problem.ic * forward_problem.ih
                      * forward_problem.iw * p.itemsize if cropped else 0)


def data_kernel(kernel: Any, p: ConvProblem) -> Any:
    """The forward kernel that computes ``p``'s ``dx``: ``kernel`` under its cap less
    :func:`data_extra_bytes`, so that bwd_d as a whole stays in the cap."""
    shadow = copy.copy(kernel)
    shadow.workspace_cap = max(1, kernel.workspace_cap - data_extra_bytes(p))
    return shadow


def workspace_bytes(kernel: Any, p: ConvProblem) -> int:
    """Bytes beyond operands and result: the forward's on the transposed problem (bwd_d,
    plus :func:`data_extra_bytes`), or ``U``, ``V`` and ``M`` and the output transform's
    float64 rows (bwd_w)."""
    if p.dir == "bwd_d":
        crop_h, crop_w = algorithm.data_crop(p)
        if crop_h >= p.oh or crop_w >= p.ow:
            return 0
        forward_problem = algorithm.data_problem(p)
        return (data_kernel(kernel, p).workspace_bytes(forward_problem)
                + data_extra_bytes(p))
    if weights_channels_last.serves(p):
        return kernel.with_libraries(weights_channels_last.workspace_bytes(p, kernel.tiling_cap))
    block = plan_weight_blocks(p, kernel.tiling_cap)
    # the block's own sums beside the running ones
    return kernel.with_libraries(algorithm.weight_workspace_bytes(p, block, p.itemsize)
                                 + 16 * p.oc * (p.ic // p.g) * p.itemsize
                                 + weights_channels_last.output_scratch_bytes(p))


def prepare_backward(kernel: Any, p: ConvProblem, a: np.ndarray,
                     b: np.ndarray) -> Callable[..., Any]:
    """The call of ``p.dir``: ``call(dy)`` -> dx, or ``call(x, dy)`` -> dw or ``(dw, db)``.

    ``kernel`` is the forward Winograd kernel (its workspace cap and filter
    matrix serve bwd_d). ``(a, b)`` are ``(dy, w)`` or ``(x, dy)``, in
    ``torch.nn.grad``'s order.
    """
    if p.dir == "bwd_d":
        return _prepare_data(kernel, p, a, b)
    return _prepare_weights(kernel, p, a, b)


def _prepare_data(kernel: Any, p: ConvProblem, dy: np.ndarray,
                  w: np.ndarray) -> Callable[..., np.ndarray]:
    crop_h, crop_w = algorithm.data_crop(p)
    if crop_h >= p.oh or crop_w >= p.ow:  # no gradient row reaches an input pixel
        dx = aligned_empty(p.input_shape, p.dtype)
        dx[...] = 0
        return lambda dy=dy: dx
    forward_problem = algorithm.data_problem(p)
    rotated = algorithm.rotated_filter(w, p.g)
    forward_kernel = data_kernel(kernel, p)
    if (crop_h, crop_w) == (0, 0):
        forward = forward_kernel.prepare_call(forward_problem, dy, rotated, None)
        return _sharing_details(lambda dy=dy: forward(dy), forward)
    cropped = aligned_empty(forward_problem.input_shape, p.dtype)
    np.copyto(cropped, dy[:, :, crop_h:, crop_w:])
    forward = forward_kernel.prepare_call(forward_problem, cropped, rotated, None)

    def run_cropped(dy: np.ndarray = dy) -> np.ndarray:
        np.copyto(cropped, dy[:, :, crop_h:, crop_w:])
        return forward(cropped)

    return _sharing_details(run_cropped, forward)


def _sharing_details(fn: Callable[..., Any], forward: Any) -> Prepared:
    """``fn`` with the details of the forward call on ``dy`` (tile, layout, schedule...).

    The same dict, not a copy, so the phase times each forward call writes
    reach bwd_d's record.
    """
    prepared = Prepared(fn)
    details = getattr(forward, "details", None)
    if details is not None:
        prepared.details = details
    return prepared


def _prepare_weights(kernel: Any, p: ConvProblem, x: np.ndarray,
                     dy: np.ndarray) -> Callable[..., Any]:
    if weights_channels_last.serves(p):
        return weights_channels_last.prepare_weights(p, x, dy, kernel.tiling_cap)
    g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
    nb, rows, cols = plan_weight_blocks(p, kernel.tiling_cap)
    tile_rows, _ = algorithm.weight_tile_grid(p)
    v_flat = np.empty(16 * p.ic * nb * rows * cols, dtype=p.dtype)
    u_flat = np.empty(16 * p.oc * nb * rows * cols, dtype=p.dtype)
    m = np.empty((16, g, kg, cg), dtype=p.dtype)
    m_block = np.empty_like(m)
    dw = aligned_empty(p.weight_shape, p.dtype)
    db = aligned_empty((p.oc,), p.dtype) if p.dir == "bwd_wb" else None
    blocks = [(n0, min(nb, p.mb - n0), tr0, min(rows, tile_rows - tr0))
              for n0 in range(0, p.mb, nb) for tr0 in range(0, tile_rows, rows)]

    def run(x: np.ndarray = x, dy: np.ndarray = dy) -> Any:
        if not blocks:  # no images: nothing is summed
            m[...] = 0
        for i, (n0, count, tr0, n_rows) in enumerate(blocks):
            tiles = count * n_rows * cols
            v = v_flat[:16 * p.ic * tiles].reshape(16, g, cg, tiles)
            u = u_flat[:16 * p.oc * tiles].reshape(16, g, kg, tiles)
            input_tiles(x, v.reshape(16, p.ic, tiles), n0, count, tr0, n_rows, cols, p.ph, p.pw)
            gradient_tiles(dy, u.reshape(16, p.oc, tiles), n0, count, tr0, n_rows, cols)
            # M[xi] (K/g, C/g) = U[xi] (K/g, T) @ V[xi]^T (T, C/g): a transposed BLAS operand
            np.matmul(u, v.transpose(0, 1, 3, 2), out=m if i == 0 else m_block)
            if i:
                np.add(m, m_block, out=m)
        weights_channels_last.weight_output_transform(m, algorithm.GRAD_A_T, dw)
        if db is None:
            return dw
        bias_gradient(dy, db)
        return dw, db

    return run
