"""Winograd F(3x3,2x2) backward weights on the CPU, channels last.

The math is :mod:`kernels.algorithms.winograd_backward`'s: per 2x2 tile of
``dy`` and its 4x4 input tile, ``V = B^T d B`` and ``U = G' dy G'^T``, summed
over tiles and images as 16 GEMMs ``M[xi] = U[xi]^T V[xi]`` (``(K, T)`` times
``(T, C)`` per group), then ``dW = A'^T M A'`` once, in float64, rounded
once. Here the channel is the unit-stride dimension of ``V``, ``U`` and the
staged rows, so every transform loop runs over contiguous channels:

- ``x``'s rows are staged padded and channels last, and ``V`` is the forward
  F(2x2,3x3) input transform of them
  (:func:`kernels.cpu.winograd_channels_last.input_transform`): the input
  tiles of bwd_w are the forward's;
- ``dy``'s rows are staged the same way (no padding; rows and columns past
  ``dy`` are zero) and :func:`gradient_transform` writes ``U``;
- the GEMMs read ``U`` and ``V`` in place, a transposed BLAS operand each.

The planar path vectorizes over the tiles of an image, few on 7x7 and 14x14
layers; this one serves layers with at least
:data:`~kernels.cpu.winograd_channels_last.MIN_CHANNELS` input and output
channels per group.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange

from convbench.contract import Prepared
from convbench.problem import ConvProblem
from convbench.problem.arguments import aligned_empty

from ..algorithms import winograd_backward as algorithm
from ..algorithms.tiling import plan_tiles
from . import winograd_channels_last as channels_last
from .base import num_threads
from .fft import bias_gradient

#: Values of each transformed tile: alpha^2 = 16.
TILE_VALUES = 16
#: Bytes of ``V``, ``U`` and staged rows a block aims at. Blocks that big keep the
#: transforms' writes in cache for the GEMMs that read them, and still give those GEMMs
#: a long inner dimension; ``M`` is summed once per block. One timing of ResNet-50's
#: 3x3 layers at batch 8 over 1 MiB to the whole batch put 8 MiB at or near the best.
BLOCK_BYTES = 8 * 2**20


def serves(p: ConvProblem) -> bool:
    """Whether the channels-last path takes ``p``: enough channels per group on both sides."""
    cg, kg = p.ic // p.g, p.oc // p.g
    return min(cg, kg) >= channels_last.MIN_CHANNELS


@njit(nogil=True, cache=True)
def gradient_transform(dyp, u, n_rows, n_cols, lo, hi):
    """``U[xi * 4 + nu, t, :] = (G' d G'^T)[xi, nu]`` for the 2x2 gradient tiles of a block.

    ``dyp`` is ``(images, 2 * n_rows, 2 * n_cols * K)``: ``dy``'s rows channels
    last, zero past its last row and column. ``G'`` maps ``(a0, a1)`` to
    ``(a0, a0 + a1, a0 - a1, -a1)``. Items are ``(image, tile row)`` pairs.
    """
    channels = u.shape[2]
    for item in range(lo, hi):
        b = item // n_rows
        i = item % n_rows
        top = dyp[b, 2 * i]
        bottom = dyp[b, 2 * i + 1]
        t_row = (b * n_rows + i) * n_cols
        for j in range(n_cols):
            t = t_row + j
            c0 = 2 * j * channels
            d0 = top[c0:c0 + channels]  # the tile's four values, each over channels
            d1 = top[c0 + channels:c0 + 2 * channels]
            e0 = bottom[c0:c0 + channels]
            e1 = bottom[c0 + channels:c0 + 2 * channels]
            # G' on the tile's rows gives (d, d + e, d - e, -e); G' on the columns of
            # each. One loop per row of G' with four stores: few enough pointers for
            # LLVM to vectorize over channels.
            for row in range(4):
                o0 = u[4 * row, t]
                o1 = u[4 * row + 1, t]
                o2 = u[4 * row + 2, t]
                o3 = u[4 * row + 3, t]
                if row == 0:
                    for k in range(channels):
                        gradient_columns(o0, o1, o2, o3, k, d0[k], d1[k])
                elif row == 1:
                    for k in range(channels):
                        gradient_columns(o0, o1, o2, o3, k, d0[k] + e0[k], d1[k] + e1[k])
                elif row == 2:
                    for k in range(channels):
                        gradient_columns(o0, o1, o2, o3, k, d0[k] - e0[k], d1[k] - e1[k])
                else:
                    for k in range(channels):
                        gradient_columns(o0, o1, o2, o3, k, -e0[k], -e1[k])


@njit(nogil=True, cache=True, inline="always")
def gradient_columns(o0, o1, o2, o3, k, a0, a1):
    """``(o0, o1, o2, o3)[k] = (a0, a0 + a1, a0 - a1, -a1)``: ``G'`` on one row's pair."""
    o0[k] = a0
    o1[k] = a0 + a1
    o2[k] = a0 - a1
    o3[k] = -a1


@njit(parallel=True, cache=True)
def weight_output_transform(m, a_t, dw):
    """``dw[g*K/g + k, c] = (A'^T M[:, g, k, c] A')`` in float64, rounded once to ``dw``'s dtype.

    ``m`` is ``(16, G, K/g, C/g)`` with ``xi * 4 + nu`` first, in either
    layout's bwd_w; ``a_t`` is ``A'^T`` (3 x 4) in float64. Parallel over
    ``(g, k)`` on Numba's threads; :func:`weight_output_rows` computes them.
    """
    groups, kg = m.shape[1], m.shape[2]
    for item in prange(groups * kg):
        weight_output_rows(m, a_t, dw, item, item + 1)


@njit(nogil=True, cache=True)
def weight_output_rows(m, a_t, dw, lo, hi):
    """:func:`weight_output_transform` for the items ``(g, k)`` in ``lo:hi``, on this thread.

    Each sums its 16 rows of ``M`` into 9 float64 rows over ``c`` (unit
    stride: the loops vectorize), then writes them out as ``(c, 3, 3)``.
    """
    kg, cg = m.shape[2], m.shape[3]
    for item in range(lo, hi):
        g = item // kg
        k = item % kg
        acc = np.zeros((9, cg), dtype=np.float64)
        for xi in range(4):
            for nu in range(4):
                row = m[xi * 4 + nu, g, k]
                for r in range(3):
                    for s in range(3):
                        coef = a_t[r, xi] * a_t[s, nu]
                        if coef != 0:
                            dst = acc[r * 3 + s]
                            for c in range(cg):
                                dst[c] += coef * row[c]
        out = dw[g * kg + k]
        for c in range(cg):
            for r in range(3):
                for s in range(3):
                    out[c, r, s] = acc[r * 3 + s, c]


def output_scratch_bytes(p: ConvProblem) -> int:
    """The output transform's float64 rows (9 x C/g) on every thread at once."""
    return num_threads() * 9 * (p.ic // p.g) * 8


def input_scratch_bytes(p: ConvProblem, cols: int) -> int:
    """A thread's ``B^T d`` of a padded row of tiles (4 x (2 cols + 2) x C) in the transform."""
    return 4 * (2 * cols + 2) * p.ic * p.itemsize


def _row_bytes(p: ConvProblem, cols: int) -> int:
    """Bytes per tile row of a block: ``V``, ``U``, and two staged rows of ``x`` and ``dy``."""
    wp = 2 * cols + 2
    return (TILE_VALUES * cols * (p.ic + p.oc) + 2 * wp * p.ic + 4 * cols * p.oc) * p.itemsize


def _sums_bytes(p: ConvProblem) -> int:
    """``M`` and one block's ``M`` beside it."""
    return 2 * TILE_VALUES * p.oc * (p.ic // p.g) * p.itemsize


def scratch_bytes(p: ConvProblem, n: int | None = None) -> int:
    """What the transforms of ``n`` threads (default: the team's) allocate at once."""
    n = channels_last.team_of(num_threads()).n if n is None else n
    _, tile_cols = algorithm.weight_tile_grid(p)
    return max(n * input_scratch_bytes(p, tile_cols), output_scratch_bytes(p))


def plan_blocks(p: ConvProblem, cap: int, target: int | None = None) -> tuple[int, int, int]:
    """(images, tile rows, tile columns) per block whose buffers fit ``cap`` beside ``M``
    and the transforms' own arrays (:func:`scratch_bytes`).

    Each image's block also stages two halo rows of ``x``, counted here as
    one more tile row.
    """
    tile_rows, tile_cols = algorithm.weight_tile_grid(p)
    per_row = _row_bytes(p, tile_cols)
    budget = cap - _sums_bytes(p) - scratch_bytes(p)
    if target is not None:
        budget = min(budget, max(target, _sums_bytes(p)))
    nb, rows = plan_tiles(p.mb, tile_rows + 1, per_row, budget)
    if rows <= tile_rows:  # a part of one image: one of its rows pays for the halo
        rows -= 1
    return nb, max(1, min(rows, tile_rows)), tile_cols


def workspace_bytes(p: ConvProblem, cap: int) -> int:
    """One block's ``V``, ``U`` and staged rows, and ``M`` twice; or, where the
    ``"blocks"`` schedule may run and takes more, every thread's own of those (a
    schedule drops the other's buffers before it makes its own); and the
    transforms' own arrays."""
    shared = _Buffers.bytes_of(p, plan_blocks(p, cap, BLOCK_BYTES))
    n = channels_last.team_of(num_threads()).n
    small = thread_block(p, cap, n)
    buffers = shared if small is None else max(shared, n * _Buffers.bytes_of(p, small))
    return buffers + scratch_bytes(p, n)


def thread_block(p: ConvProblem, cap: int, n: int) -> tuple[int, int, int] | None:
    """A thread's block in the ``"blocks"`` schedule of ``n`` threads, or None where that
    schedule does not run: one thread, fewer than two blocks per thread, or ``n`` sets
    of buffers over ``cap``."""
    if n < 2:
        return None
    small = plan_blocks(p, cap // n, THREAD_BLOCK_BYTES)
    if len(_blocks_of(p, small)) < 2 * n or \
            n * _Buffers.bytes_of(p, small) + scratch_bytes(p, n) > cap:
        return None
    return small


#: Bytes of ``V``, ``U`` and staged rows a thread's own block aims at in the
#: ``"blocks"`` schedule: about a quarter of a core's L2, so that the
#: transforms' writes are still there when that thread's GEMMs read them.
THREAD_BLOCK_BYTES = 1 << 21

#: The schedules of a call (see :func:`prepare_weights`).
SCHEDULES = ("blas", "team", "blocks")


class _Buffers:
    """Staging, ``V``, ``U`` and ``M`` for blocks up to ``block``; views per block.

    The staged rows' borders are never written, so they stay zero for any
    block's view.
    """

    def __init__(self, p: ConvProblem, block: tuple[int, int, int]) -> None:
        nb, rows, cols = block
        self.p, self.cols, self.wp = p, cols, 2 * cols + 2
        self.xp = np.zeros(nb * (2 * rows + 2) * self.wp * p.ic, dtype=p.dtype)
        self.dyp = np.zeros(nb * 2 * rows * 2 * cols * p.oc, dtype=p.dtype)
        self.v = np.empty(TILE_VALUES * nb * rows * cols * p.ic, dtype=p.dtype)
        self.u = np.empty(TILE_VALUES * nb * rows * cols * p.oc, dtype=p.dtype)
        shape = (TILE_VALUES, p.g, p.oc // p.g, p.ic // p.g)
        self.m = np.empty(shape, dtype=p.dtype)
        self.m_block = np.empty(shape, dtype=p.dtype)

    @staticmethod
    def bytes_of(p: ConvProblem, block: tuple[int, int, int]) -> int:
        nb, rows, cols = block
        return nb * (rows + 1) * _row_bytes(p, cols) + _sums_bytes(p)

    def views(self, count: int, n_rows: int) -> tuple[np.ndarray, ...]:
        """``xp``, ``dyp``, ``V`` and ``U`` of ``count`` images x ``n_rows`` tile rows."""
        p, cols, wp = self.p, self.cols, self.wp
        tiles = count * n_rows * cols
        xp = self.xp[:count * (2 * n_rows + 2) * wp * p.ic].reshape(count, 2 * n_rows + 2,
                                                                     wp * p.ic)
        dyp = self.dyp[:count * 2 * n_rows * 2 * cols * p.oc].reshape(count, 2 * n_rows,
                                                                      2 * cols * p.oc)
        return (xp, dyp, self.v[:TILE_VALUES * tiles * p.ic].reshape(TILE_VALUES, tiles, p.ic),
                self.u[:TILE_VALUES * tiles * p.oc].reshape(TILE_VALUES, tiles, p.oc))


def _blocks_of(p: ConvProblem, block: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """(first image, images, first tile row, tile rows) of every block, in order."""
    nb, rows, _ = block
    tile_rows, _ = algorithm.weight_tile_grid(p)
    return [(n0, min(nb, p.mb - n0), tr0, min(rows, tile_rows - tr0))
            for n0 in range(0, p.mb, nb) for tr0 in range(0, tile_rows, rows)]


def prepare_weights(p: ConvProblem, x: np.ndarray, dy: np.ndarray, cap: int) -> Prepared:
    """The bwd_w (or bwd_wb) call of ``p``: ``call(x, dy)`` -> ``dw`` or ``(dw, db)``.

    A call runs one of three schedules:

    - ``"blas"``: block by block (:data:`BLOCK_BYTES`), the staging and the
      transforms split over the thread team, each block's 16 GEMMs in one
      ``matmul`` on BLAS's own threads;
    - ``"team"``: the same, the 16 GEMMs split over the team, each thread's
      BLAS single-threaded: no BLAS threads left spinning into the output
      transform;
    - ``"blocks"``: each thread of the team runs every phase of its own
      cache-sized blocks (:data:`THREAD_BLOCK_BYTES`) with single-threaded
      BLAS into its own ``M``, and the threads' sums are added at the end.
      Only where there are at least two such blocks per thread, and
      every thread's buffers fit the workspace cap (:func:`thread_block`).

    Which is fastest depends on the shape (a 64 x 64 ``M`` per GEMM is too
    small to split well over BLAS's threads, a 512 x 512 one is not), so
    every whole call is timed here on ``x`` and ``dy`` and the fastest kept
    (:func:`~.winograd_channels_last.choose_schedule`). Its details name the
    layout, the schedule, the blocks and the last call's seconds per phase
    (transforms, GEMMs, output transform; averaged over the threads in
    ``"blocks"``).
    """
    g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
    block = plan_blocks(p, cap, BLOCK_BYTES)
    cols = block[2]
    b_t = algorithm.GRAD_B_T.astype(p.dtype)
    transform_in = (channels_last.input_transform_f2
                    if np.array_equal(b_t, channels_last.F2_B_T) else channels_last.input_transform)
    a_t = algorithm.GRAD_A_T
    dw = aligned_empty(p.weight_shape, p.dtype)
    db = aligned_empty((p.oc,), p.dtype) if p.dir == "bwd_wb" else None
    blocks = _blocks_of(p, block)
    team = channels_last.team_of(num_threads())
    (pt, _), (pl, _) = p.padding
    clock = time.perf_counter
    shared: dict[str, Any] = {"buffers": None, "thread_buffers": None}

    def serial(fn: Callable[..., None], n_items: int, *args: object) -> None:
        fn(*args, 0, n_items)

    def gemms(u_g: np.ndarray, v_g: np.ndarray, out: np.ndarray, lo: int = 0,
              hi: int = TILE_VALUES) -> None:
        np.matmul(u_g[lo:hi], v_g[lo:hi], out=out[lo:hi])

    def team_gemms(u_g: np.ndarray, v_g: np.ndarray, out: np.ndarray) -> None:
        team.split(gemms, TILE_VALUES, u_g, v_g, out)

    def sums_of(x: np.ndarray, dy: np.ndarray, bufs: _Buffers, own: list[tuple[int, ...]],
                split: Callable[..., None],
                gemm: Callable[..., None] = gemms) -> tuple[float, float]:
        """``M`` of the blocks ``own`` summed into ``bufs.m``: (transform s, GEMM s)."""
        t_in = t_gemm = 0.0
        for i, (n0, count, tr0, n_rows) in enumerate(own):
            t0 = clock()
            xp, dyp, v, u = bufs.views(count, n_rows)
            split(channels_last.pad_channels_last, count * xp.shape[1], x, xp, n0, 2 * tr0,
                  pt, pl)
            split(transform_in, count * n_rows, xp, v, b_t, 2, n_rows, cols)
            split(channels_last.pad_channels_last, count * dyp.shape[1], dy, dyp, n0, 2 * tr0,
                  0, 0)
            split(gradient_transform, count * n_rows, dyp, u, n_rows, cols)
            t1 = clock()
            tiles = v.shape[1]
            # M[xi, g] (K/g, C/g) = U[xi, :, g]^T (K/g, T) @ V[xi, :, g] (T, C/g)
            u_g = u.reshape(TILE_VALUES, tiles, g, kg).transpose(0, 2, 3, 1)
            v_g = v.reshape(TILE_VALUES, tiles, g, cg).transpose(0, 2, 1, 3)
            gemm(u_g, v_g, bufs.m if i == 0 else bufs.m_block)
            if i:
                np.add(bufs.m, bufs.m_block, out=bufs.m)
            t_in += t1 - t0
            t_gemm += clock() - t1
        if not own:  # no images: nothing is summed
            bufs.m[...] = 0
        return t_in, t_gemm

    def by_phases(x: np.ndarray, dy: np.ndarray,
                  gemm: Callable[..., None] = gemms) -> tuple[np.ndarray, dict]:
        if shared["buffers"] is None:
            shared["thread_buffers"] = None  # never both schedules' buffers at once
            shared["buffers"] = _Buffers(p, block)
        bufs = shared["buffers"]
        t_in, t_gemm = sums_of(x, dy, bufs, blocks, team.split, gemm)
        return bufs.m, {"input_transform": t_in, "gemm": t_gemm}

    def by_team(x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, dict]:
        with channels_last.single_threaded_blas():
            return by_phases(x, dy, team_gemms)

    schedules: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {"blas": by_phases}
    if team.n > 1:
        schedules["team"] = by_team
    small = thread_block(p, cap, team.n)
    thread_blocks = [] if small is None else _blocks_of(p, small)
    if small is not None:
        seconds = np.zeros((team.n, 2))

        def own_blocks(x: np.ndarray, dy: np.ndarray, lo: int, hi: int) -> None:
            for tid in range(lo, hi):
                bufs = shared["thread_buffers"][tid]
                seconds[tid] = sums_of(x, dy, bufs, thread_blocks[tid::team.n], serial)

        def by_blocks(x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, dict]:
            if shared["thread_buffers"] is None:
                shared["buffers"] = None
                shared["thread_buffers"] = [_Buffers(p, small) for _ in range(team.n)]
            with channels_last.single_threaded_blas():
                team.split(own_blocks, team.n, x, dy)
            sums = shared["thread_buffers"]
            m = sums[0].m
            for other in sums[1:]:
                np.add(m, other.m, out=m)
            t_in, t_gemm = seconds.mean(axis=0)
            return m, {"input_transform": float(t_in), "gemm": float(t_gemm)}

        schedules["blocks"] = by_blocks

    details: dict[str, Any] = {"layout": "channels-last", "blocks": len(blocks),
                               "schedule": "blas", "schedules": list(schedules),
                               "phase_s": {}}

    def run(x: np.ndarray = x, dy: np.ndarray = dy) -> Any:
        m, phases = schedules[prepared.details["schedule"]](x, dy)
        t3 = clock()
        # on the team, whose threads sleep between calls, as every other phase here
        team.split(weight_output_rows, g * kg, m, a_t, dw)
        prepared.details["phase_s"] = {**phases, "output_transform": clock() - t3}
        if db is None:
            return dw
        bias_gradient(dy, db)
        return dw, db

    prepared = Prepared(run, details)
    if len(schedules) > 1:
        choice = channels_last.choose_schedule(prepared, x, tuple(schedules), dy,
                                               key=("winograd bwd_w", str(p), cap))
        prepared.details["schedule"] = choice
        if choice == "blocks":
            prepared.details["blocks"] = len(thread_blocks)
            shared["buffers"] = None
        else:
            shared["thread_buffers"] = None
    return prepared
