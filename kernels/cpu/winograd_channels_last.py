"""Winograd F(m x m, 3x3) on the CPU with the channels innermost: Numba transforms, BLAS GEMMs.

The transforms of a tile are short (alpha = m + 2 values a side), but a layer
has many channels. So here the channel is the innermost, unit-stride
dimension of every buffer, and every transform loop runs over channels, which
LLVM vectorizes whatever the image size (a 7x7 image has 4 tiles of 4x4, but
512 channels):

1. a block's input rows are copied into a zero-padded channels-last buffer
   ``xp (images, rows, Wp * C)``, so that border tiles need no tests;
2. ``V = B^T d B``: for a row of tiles, ``B^T d`` is applied to whole padded
   rows at once (``alpha`` vector sums over ``Wp * C`` values, shared by the
   tiles of the row), then ``(B^T d) B`` per tile, over ``C``; ``V`` is
   ``(alpha^2, T, C)``;
3. ``M = V @ U``: ``alpha^2`` GEMMs ``(T, C/g) @ (C/g, K/g)`` per group, with
   ``U (alpha^2, G, C/g, K/g)`` transformed once, in ``prepare``;
4. ``Y = A^T M A`` (+ bias) per tile, over ``K``, into a channels-last row of
   output tiles that is then transposed into the ``NCHW`` output, writing only
   the outputs that exist.

A zero transform coefficient is skipped, so a NaN or Inf reaches the same
outputs as in the definition's sums.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import threadpoolctl
from numba import njit

from convbench.contract import Prepared
from convbench.problem import ConvProblem

from ..algorithms import winograd as algorithm
from .base import fastest, num_threads

_CONTROLLER: threadpoolctl.ThreadpoolController | None = None


def single_threaded_blas() -> threadpoolctl._ThreadpoolLimiter:
    """BLAS limited to the calling thread for a ``with`` block.

    Each of the team's threads runs its own GEMMs: BLAS's own pool would wake
    and keep spinning after them, taking cores from the next phase.
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = threadpoolctl.ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


@njit(nogil=True, cache=True)
def pad_channels_last(x, xp, n0, r0, pt, pl, lo, hi):
    """``xp[b, r, (pl + w) * C + c] = x[n0 + b, c, r0 + r - pt, w]``, zero off the image.

    Items are ``(b, r)`` pairs, ``b * rows + r``. The ``pl`` columns left of
    the image and those right of it are never written: they stay the zeros
    the buffer was made with. Columns past the buffer's width (a negative
    right padding: no tile reads them) are not copied.
    """
    channels, height = x.shape[1], x.shape[2]
    rows = xp.shape[1]
    width = min(x.shape[3], xp.shape[2] // channels - pl)
    for item in range(lo, hi):
        b = item // rows
        r = item % rows
        h = r0 + r - pt
        dst = xp[b, r, pl * channels:(pl + width) * channels]
        if h < 0 or h >= height:
            for e in range(width * channels):
                dst[e] = 0
            continue
        src = x[n0 + b, :, h, :]
        for w in range(width):
            out = dst[w * channels:(w + 1) * channels]
            for c in range(channels):
                out[c] = src[c, w]


@njit(nogil=True, cache=True, inline="always")
def scaled_add(out, coef, src, first):
    """``out = coef * src`` if ``first``, else ``out += coef * src`` (1-D, same length)."""
    if first:
        for e in range(out.shape[0]):
            out[e] = coef * src[e]
    else:
        for e in range(out.shape[0]):
            out[e] += coef * src[e]


@njit(nogil=True, cache=True, inline="always")
def row_transform(image, b_t, row0, rows):
    """``rows[xi] = sum_a B^T[xi, a] image[row0 + a]`` over the first ``rows.shape[1]`` values."""
    alpha, span = rows.shape
    for xi in range(alpha):
        out = rows[xi]
        first = True
        for a in range(alpha):
            if b_t[xi, a] != 0:
                scaled_add(out, b_t[xi, a], image[row0 + a, :span], first)
                first = False


@njit(nogil=True, cache=True, inline="always")
def write_band(band, bias, image, row0):
    """``image[k, row0 + p, w] = band[p, w * K + k] + bias[k]`` for the rows that exist.

    ``band`` is a row of output tiles channels last, ``(m, width * K)``;
    ``image`` one output image ``(K, H, W)``.
    """
    m = band.shape[0]
    k_total, out_h, out_w = image.shape
    for p in range(m):
        row = row0 + p
        if row >= out_h:
            break
        src = band[p]
        for k in range(k_total):
            dst = image[k, row]
            bk = bias[k]
            for w in range(out_w):
                dst[w] = src[w * k_total + k] + bk


@njit(nogil=True, cache=True)
def input_transform(xp, v, b_t, m, n_rows, n_cols, lo, hi):
    """``V[xi * alpha + nu, t, :] = (B^T d B)[xi, nu]`` for the tiles of a block.

    Tile ``t = (b * n_rows + i) * n_cols + j`` is the block's image ``b``,
    tile row ``i``, column ``j``; its input tile starts at row ``i * m`` and
    column ``j * m`` of the block's padded input ``xp``.
    """
    alpha = b_t.shape[0]
    channels = v.shape[2]
    span = (n_cols * m + alpha - m) * channels  # padded values under one row of tiles
    for item in range(lo, hi):
        b = item // n_rows
        i = item % n_rows
        row0 = i * m
        image = xp[b]
        rows = np.empty((alpha, span), dtype=v.dtype)  # B^T d for the whole row of tiles
        row_transform(image, b_t, row0, rows)
        t_row = (b * n_rows + i) * n_cols
        for j in range(n_cols):
            t = t_row + j
            col0 = j * m * channels
            for xi in range(alpha):
                src_row = rows[xi, col0:col0 + alpha * channels]
                for nu in range(alpha):
                    out = v[xi * alpha + nu, t]
                    first = True
                    for e in range(alpha):
                        if b_t[nu, e] != 0:
                            scaled_add(out, b_t[nu, e],
                                       src_row[e * channels:(e + 1) * channels], first)
                            first = False


@njit(nogil=True, cache=True)
def output_transform(mm, a_t, bias, y, n0, nb, tr0, n_rows, n_cols, lo, hi):
    """``y[n0 + b, :, rows, cols] = (A^T M A)`` (+ bias) for the tiles of a block.

    Only the outputs that exist are written (the last row or column of tiles
    may stick out of the image).
    """
    m, alpha = a_t.shape
    k_total = mm.shape[2]
    width = n_cols * m
    for item in range(lo, hi):
        b = item // n_rows
        i = item % n_rows
        s = np.empty((alpha, m * k_total), dtype=y.dtype)  # A^T over nu, per xi
        band = np.empty((m, width * k_total), dtype=y.dtype)  # the row of tiles' outputs
        t_row = (b * n_rows + i) * n_cols
        for j in range(n_cols):
            t = t_row + j
            for xi in range(alpha):
                for q in range(m):
                    out = s[xi, q * k_total:(q + 1) * k_total]
                    first = True
                    for nu in range(alpha):
                        if a_t[q, nu] != 0:
                            scaled_add(out, a_t[q, nu], mm[xi * alpha + nu, t], first)
                            first = False
            for p in range(m):
                dst = band[p, j * m * k_total:(j + 1) * m * k_total]
                for k in range(m * k_total):
                    dst[k] = 0
                for xi in range(alpha):
                    if a_t[p, xi] != 0:
                        scaled_add(dst, a_t[p, xi], s[xi], False)
        write_band(band, bias, y[n0 + b], (tr0 + i) * m)


#: F(2x2,3x3)'s ``B^T`` and ``A^T`` (Lavin & Gray), for which the transforms below
#: have a form with fewer, longer loops.
F2_B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
F2_A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def is_f2(a_t: np.ndarray, b_t: np.ndarray) -> bool:
    """Whether ``(A^T, B^T)`` are exactly F(2x2,3x3)'s: the specialized transforms apply."""
    return (a_t.shape == F2_A_T.shape and b_t.shape == F2_B_T.shape
            and bool(np.all(a_t == F2_A_T)) and bool(np.all(b_t == F2_B_T)))


@njit(nogil=True, cache=True)
def input_transform_f2(xp, v, b_t, m, n_rows, n_cols, lo, hi):
    """:func:`input_transform` for F(2x2,3x3)'s ``B^T`` (:data:`F2_B_T`), bit for bit.

    ``B^T d`` is the generic one, over whole rows. Then ``(B^T d) B`` of a
    tile's row ``xi`` is one loop over channels with four stores,
    ``(r0 - r2, r1 + r2, r2 - r1, r1 - r3)``, where the generic form runs
    eight loops of two terms: a loop over 64 channels costs more to enter
    than to run.
    """
    alpha = 4
    channels = v.shape[2]
    span = (n_cols * m + alpha - m) * channels
    for item in range(lo, hi):
        b = item // n_rows
        i = item % n_rows
        row0 = i * m
        image = xp[b]
        rows = np.empty((alpha, span), dtype=v.dtype)
        row_transform(image, b_t, row0, rows)
        t_row = (b * n_rows + i) * n_cols
        for j in range(n_cols):
            t = t_row + j
            col0 = j * m * channels
            for xi in range(alpha):
                r = rows[xi, col0:col0 + alpha * channels]
                r0 = r[:channels]
                r1 = r[channels:2 * channels]
                r2 = r[2 * channels:3 * channels]
                r3 = r[3 * channels:]
                o0 = v[xi * alpha, t]
                o1 = v[xi * alpha + 1, t]
                o2 = v[xi * alpha + 2, t]
                o3 = v[xi * alpha + 3, t]
                for c in range(channels):
                    o0[c] = r0[c] - r2[c]
                    o1[c] = r1[c] + r2[c]
                    o2[c] = r2[c] - r1[c]
                    o3[c] = r1[c] - r3[c]


@njit(nogil=True, cache=True)
def output_transform_f2(mm, a_t, bias, y, n0, nb, tr0, n_rows, n_cols, lo, hi):
    """:func:`output_transform` for F(2x2,3x3)'s ``A^T`` (:data:`F2_A_T`), bit for bit.

    ``A^T`` over ``nu`` is one loop over channels per ``xi`` with two stores,
    ``((M0 + M1) + M2, (M1 - M2) - M3)``; over ``xi``, one loop per output
    row, summed in the generic order.
    """
    m, alpha = 2, 4
    k_total = mm.shape[2]
    width = n_cols * m
    for item in range(lo, hi):
        b = item // n_rows
        i = item % n_rows
        s = np.empty((alpha, m * k_total), dtype=y.dtype)
        band = np.empty((m, width * k_total), dtype=y.dtype)
        zero = np.zeros(1, dtype=y.dtype)[0]  # the generic sum starts from +0
        t_row = (b * n_rows + i) * n_cols
        for j in range(n_cols):
            t = t_row + j
            for xi in range(alpha):
                q0 = s[xi, :k_total]
                q1 = s[xi, k_total:]
                m0 = mm[xi * alpha, t]
                m1 = mm[xi * alpha + 1, t]
                m2 = mm[xi * alpha + 2, t]
                m3 = mm[xi * alpha + 3, t]
                for k in range(k_total):
                    q0[k] = (m0[k] + m1[k]) + m2[k]
                    q1[k] = (m1[k] - m2[k]) - m3[k]
            s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
            top = band[0, j * m * k_total:(j + 1) * m * k_total]
            bottom = band[1, j * m * k_total:(j + 1) * m * k_total]
            for k in range(m * k_total):
                top[k] = ((zero + s0[k]) + s1[k]) + s2[k]
            for k in range(m * k_total):
                bottom[k] = ((zero + s1[k]) - s2[k]) - s3[k]
        write_band(band, bias, y[n0 + b], (tr0 + i) * m)


def gemm_stage(v: np.ndarray, u: np.ndarray, mm: np.ndarray) -> None:
    """``M[a, :, group g] = V[a, :, group g] @ U[a, g]`` for every ``a`` and group.

    ``v (alpha^2, T, C)``, ``u (alpha^2, G, C/g, K/g)``, ``mm (alpha^2, T, K)``.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # a NaN input is a result, not an error
        _gemms(v, u, mm)


def _gemms(v: np.ndarray, u: np.ndarray, mm: np.ndarray) -> None:
    a2, tiles, channels = v.shape
    groups, cg, kg = u.shape[1], u.shape[2], u.shape[3]
    if groups == 1:
        np.matmul(v, u[:, 0], out=mm)
    elif cg == 1:  # depthwise (and channel multipliers): an element-wise product
        np.multiply(v.reshape(a2, tiles, groups, 1), u.reshape(a2, 1, groups, kg),
                    out=mm.reshape(a2, tiles, groups, kg))
    else:
        for g in range(groups):
            np.matmul(v[:, :, g * cg:(g + 1) * cg], u[:, g], out=mm[:, :, g * kg:(g + 1) * kg])


#: Bytes of ``V``, ``M`` and padded input a thread's own block aims at in the
#: ``"blocks"`` schedule, per output tile: about half of a core's L2 (so that a
#: block stays in it from one phase to the next), and all of it for
#: F(2x2,3x3), whose blocks hold the fewest outputs per byte and whose calls
#: per block cost the most. Timed on ResNet-50's res2 and res3 and VGG-16's
#: conv2_1 at batch 8: F(2x2,3x3) 10-25% faster with 2 MiB than 1 MiB,
#: the larger tiles the same within the noise.
THREAD_BLOCK_BYTES = {2: 1 << 21, 4: 1 << 20, 6: 1 << 20}

#: The schedules of a call (see :func:`prepare_forward`).
SCHEDULES = ("blas", "team", "blocks")


def _blocks_of(p: ConvProblem, m: int, block: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """(first image, images, first tile row, tile rows) of every block, in order."""
    nb, rows, _ = block
    tile_rows, _ = algorithm.tile_grid_of(p, m)
    return [(n0, min(nb, p.mb - n0), tr0, min(rows, tile_rows - tr0))
            for n0 in range(0, p.mb, nb) for tr0 in range(0, tile_rows, rows)]


class _Buffers:
    """Flat buffers for blocks up to ``block``: prefixes viewed per block are contiguous.

    The padded input's border columns are never written, so they stay zero
    for any block's view.
    """

    def __init__(self, p: ConvProblem, m: int, block: tuple[int, int, int]) -> None:
        alpha = m + 2
        nb, rows, cols = block
        self.m, self.alpha, self.cols, self.ic, self.oc = m, alpha, cols, p.ic, p.oc
        self.wp = cols * m + alpha - m
        self.xp = np.zeros(nb * (rows * m + alpha - m) * self.wp * p.ic, dtype=p.dtype)
        self.v = np.empty(alpha * alpha * nb * rows * cols * p.ic, dtype=p.dtype)
        self.mm = np.empty(alpha * alpha * nb * rows * cols * p.oc, dtype=p.dtype)

    def views(self, count: int, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``xp``, ``V`` and ``M`` of a block of ``count`` images x ``n_rows`` tile rows."""
        a2, tiles = self.alpha * self.alpha, count * n_rows * self.cols
        xp_rows = n_rows * self.m + self.alpha - self.m
        xp = self.xp[:count * xp_rows * self.wp * self.ic].reshape(count, xp_rows,
                                                                   self.wp * self.ic)
        return (xp, self.v[:a2 * tiles * self.ic].reshape(a2, tiles, self.ic),
                self.mm[:a2 * tiles * self.oc].reshape(a2, tiles, self.oc))


def gemm_layout(u: np.ndarray) -> np.ndarray:
    """``U`` (alpha^2, G, K/g, C/g) as the GEMMs read it here: (alpha^2, G, C/g, K/g).

    A copy: the argument, a temporary at the call site, is then freed, so that
    ``prepare`` does not hold ``U`` twice while it chooses a schedule.
    """
    return np.ascontiguousarray(u.transpose(0, 1, 3, 2))


def prepare_forward(p: ConvProblem, m: int, a_t: np.ndarray, b_t: np.ndarray,
                    u_gemm: np.ndarray, bias: np.ndarray, block: tuple[int, int, int],
                    details: dict, x: np.ndarray | None = None,
                    cap: int | None = None) -> Prepared:
    """The forward call of F(m x m, 3x3) for ``p`` with ``U`` in :func:`gemm_layout`.

    A call runs one of three schedules:

    - ``"blas"``: block by block, each phase split over the thread team,
      the GEMMs stacked in one ``matmul`` on BLAS's own threads;
    - ``"team"``: the same, the GEMMs split by ``alpha^2`` slices over the
      team, each thread's BLAS single-threaded;
    - ``"blocks"``: each thread of the team runs every phase of its own
      cache-sized blocks (:data:`THREAD_BLOCK_BYTES`), with single-threaded
      BLAS: ``V`` and ``M`` stay in the core's cache, and a call wakes the
      team once. Only where there are at least two such blocks per thread.

    Which is fastest depends on the shape and on the BLAS build, so with an
    input ``x`` each schedule's whole call is timed here and the fastest
    kept (:func:`choose_schedule`), as cuDNN's benchmark mode does. The
    shared block's buffers and the threads' own are never held at once: a
    schedule drops the other's before it makes its own.

    Parameters
    ----------
    p : ConvProblem
        A 3x3, stride-1, dilation-1 problem.
    m : int
        The output tile.
    a_t, b_t : numpy.ndarray
        ``A^T`` and ``B^T`` in the problem's dtype.
    u_gemm : numpy.ndarray
        The transformed filters, ``(alpha^2, G, C/g, K/g)`` (:func:`gemm_layout`).
    bias : numpy.ndarray
        ``K`` values added to every output (zeros for none).
    block : tuple of int
        (images, tile rows, tile columns) per block of tiles in the
        ``"blas"`` and ``"team"`` schedules.
    details : dict
        Starts the record's details; each call sets its ``phase_s``.
    x : numpy.ndarray, optional
        An input to choose the schedule on; without one, ``"blas"`` runs.
    cap : int, optional
        The workspace cap the ``"blocks"`` schedule's buffers (one set per
        thread, and ``U``) must fit; without one, that schedule is not tried.

    Returns
    -------
    Prepared
        ``call(x) -> y``; its details name the layout, the schedule, its
        blocks and the last call's seconds per phase (averaged over the
        threads in ``"blocks"``).
    """
    alpha = m + 2
    a2 = alpha * alpha
    (pt, _), (pl, _) = p.padding
    y = np.empty((p.mb, p.oc, p.oh, p.ow), dtype=p.dtype)
    cols = block[2]
    team = team_of(num_threads())
    clock = time.perf_counter
    blocks = _blocks_of(p, m, block)
    shared = {"buffers": _Buffers(p, m, block)}
    f2 = is_f2(a_t, b_t)
    transform_in = input_transform_f2 if f2 else input_transform
    transform_out = output_transform_f2 if f2 else output_transform

    def phases_in(x: np.ndarray, bufs: _Buffers, n0: int, count: int, tr0: int,
                  n_rows: int, split: Callable[..., None]) -> tuple[np.ndarray, np.ndarray]:
        xp, v, mm = bufs.views(count, n_rows)
        split(pad_channels_last, count * xp.shape[1], x, xp, n0, tr0 * m, pt, pl)
        split(transform_in, count * n_rows, xp, v, b_t, m, n_rows, cols)
        return v, mm

    def serial(fn: Callable[..., None], n_items: int, *args: object) -> None:
        fn(*args, 0, n_items)

    def slices(v: np.ndarray, mm: np.ndarray, lo: int, hi: int) -> None:
        gemm_stage(v[lo:hi], u_gemm[lo:hi], mm[lo:hi])

    def gemm_team(v: np.ndarray, mm: np.ndarray) -> None:
        with single_threaded_blas():
            team.split(slices, a2, v, mm)

    def gemm_blas(v: np.ndarray, mm: np.ndarray) -> None:
        gemm_stage(v, u_gemm, mm)

    def by_phases(gemm: Callable[[np.ndarray, np.ndarray], None]) -> Callable[..., dict]:
        def run(x: np.ndarray) -> dict:
            t_in = t_gemm = t_out = 0.0
            if shared.get("buffers") is None:
                shared["thread_buffers"] = None
                shared["buffers"] = _Buffers(p, m, block)
            bufs = shared["buffers"]
            for n0, count, tr0, n_rows in blocks:
                t0 = clock()
                v, mm = phases_in(x, bufs, n0, count, tr0, n_rows, team.split)
                t1 = clock()
                gemm(v, mm)
                t2 = clock()
                team.split(transform_out, count * n_rows, mm, a_t, bias, y, n0, count, tr0,
                           n_rows, cols)
                t3 = clock()
                t_in += t1 - t0
                t_gemm += t2 - t1
                t_out += t3 - t2
            return {"input_transform": t_in, "gemm": t_gemm, "output_transform": t_out}
        return run

    schedules: dict[str, Callable[..., dict]] = {"blas": by_phases(gemm_blas),
                                                  "team": by_phases(gemm_team)}
    small = None if cap is None else thread_block(p, m, cap, team.n)
    thread_blocks = [] if small is None else _blocks_of(p, m, small)
    if small is not None:
        seconds = np.zeros((team.n, 3))

        def own_blocks(x: np.ndarray, lo: int, hi: int) -> None:
            for tid in range(lo, hi):
                bufs = shared["thread_buffers"][tid]
                for n0, count, tr0, n_rows in thread_blocks[tid::team.n]:
                    t0 = clock()
                    v, mm = phases_in(x, bufs, n0, count, tr0, n_rows, serial)
                    t1 = clock()
                    gemm_stage(v, u_gemm, mm)
                    t2 = clock()
                    transform_out(mm, a_t, bias, y, n0, count, tr0, n_rows, cols, 0,
                                  count * n_rows)
                    seconds[tid] += (t1 - t0, t2 - t1, clock() - t2)

        def by_blocks(x: np.ndarray) -> dict:
            seconds[:] = 0
            if shared.get("thread_buffers") is None:
                shared["buffers"] = None
                shared["thread_buffers"] = [_Buffers(p, m, small) for _ in range(team.n)]
            with single_threaded_blas():
                team.split(own_blocks, team.n, x)
            t_in, t_gemm, t_out = seconds.mean(axis=0)
            return {"input_transform": float(t_in), "gemm": float(t_gemm),
                    "output_transform": float(t_out)}

        schedules["blocks"] = by_blocks

    details = {**details, "layout": "channels-last", "blocks": len(blocks),
               "schedule": "blas", "schedules": list(schedules),
               "phase_s": {"input_transform": 0.0, "gemm": 0.0, "output_transform": 0.0}}
    default_x = x

    def run(x: np.ndarray | None = None) -> np.ndarray:
        prepared.details["phase_s"] = schedules[prepared.details["schedule"]](
            default_x if x is None else x)
        return y

    prepared = Prepared(run, details)
    if x is not None and team.n > 1 and blocks:
        choice = choose_schedule(prepared, x, tuple(schedules),
                                 key=("winograd forward", str(p), m, f2, cap, block))
        prepared.details["schedule"] = choice
        if choice == "blocks":
            prepared.details["blocks"] = len(thread_blocks)
            shared["buffers"] = None  # made again only if another schedule is set
        else:
            shared["thread_buffers"] = None
    return prepared


def choose_schedule(prepared: Prepared, x: np.ndarray, choices: tuple[str, ...],
                    *more: np.ndarray, key: Hashable = None) -> str:
    """The schedule whose whole call is fastest on ``x`` (and ``more`` operands: bwd_w's
    ``dy``), timed here, or the one chosen before for the same ``key``
    (:func:`~.base.fastest`).

    BLAS's own threads win where one GEMM per ``alpha^2`` slice is too small
    to split well across the team, and lose where they spin between calls or
    share a slice badly; per-thread blocks win where ``V`` and ``M`` of a
    whole block would not stay in cache.
    """
    def with_schedule(choice: str) -> Callable[[], object]:
        def call() -> object:
            prepared.details["schedule"] = choice
            return prepared(x, *more)
        return call

    return fastest({choice: with_schedule(choice) for choice in choices}, key)


#: Fewest input channels for the channels-last layout: below one vector of
#: float32 (AVX-512) its channel loops are too short, and the planar layout,
#: vectorized over tiles, is faster.
MIN_CHANNELS = 16


#: The layouts a Winograd CPU kernel can take: ``"auto"`` picks by :func:`serves`.
LAYOUTS = ("auto", "channels-last", "planar")


def checked_layout(layout: str) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`; a ``ValueError`` naming them otherwise."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def serves(p: ConvProblem, layout: str = "auto") -> bool:
    """Whether ``layout`` means the channels-last path for ``p``.

    ``"auto"`` takes it where the input has enough channels to vectorize over.
    """
    if checked_layout(layout) == "auto":
        return p.ic >= MIN_CHANNELS
    return layout == "channels-last"


def _block_bytes(p: ConvProblem, m: int) -> tuple[int, int, int]:
    """Bytes per tile row of a block (``V``, ``M`` and padded input), per image's halo, of ``U``."""
    alpha = m + 2
    _, tile_cols = algorithm.tile_grid_of(p, m)
    wp = tile_cols * m + alpha - m
    per_row = (alpha * alpha * (p.ic + p.oc) * tile_cols + m * wp * p.ic) * p.itemsize
    halo = (alpha - m) * wp * p.ic * p.itemsize
    return per_row, halo, algorithm.tiles_filter_bytes(p, alpha, p.itemsize)


def transform_scratch_bytes(p: ConvProblem, m: int) -> int:
    """What one thread's transform allocates for a row of tiles: the input rows' ``B^T d``
    (alpha x padded row), or the output's ``A^T M`` and its band of output rows."""
    alpha = m + 2
    _, cols = algorithm.tile_grid_of(p, m)
    span = (cols * m + alpha - m) * p.ic
    return max(alpha * span, (alpha * m + m * cols * m) * p.oc) * p.itemsize


def scratch_bytes(p: ConvProblem, m: int, n: int | None = None) -> int:
    """The transforms' allocations of the team's ``n`` threads at once (default: its size)."""
    n = team_of(num_threads()).n if n is None else n
    return n * transform_scratch_bytes(p, m)


def thread_block(p: ConvProblem, m: int, cap: int, n: int) -> tuple[int, int, int] | None:
    """A thread's block in the ``"blocks"`` schedule of ``n`` threads under ``cap``, or None
    where that schedule does not run: one thread, fewer than two blocks a thread, or the
    threads' buffers over the cap."""
    if n < 2:
        return None
    u_bytes = algorithm.tiles_filter_bytes(p, m + 2, p.itemsize)
    scratch = scratch_bytes(p, m, n)
    small = plan_blocks(p, m, u_bytes + max(0, cap - u_bytes) // n,
                        THREAD_BLOCK_BYTES.get(m, 1 << 20), scratch=scratch // n)
    per_row, halo, _ = _block_bytes(p, m)
    threads = n * small[0] * (small[1] * per_row + halo)
    if len(_blocks_of(p, m, small)) < 2 * n or u_bytes + threads + scratch > cap:
        return None
    return small


def plan_blocks(p: ConvProblem, m: int, cap: int, target: int | None = None,
                scratch: int | None = None) -> tuple[int, int, int]:
    """(images, tile rows, tile columns) per block whose workspace fits ``cap``.

    A block's workspace is its ``V``, ``M`` and zero-padded input rows, and
    ``U`` is shared by all blocks, as are the transforms' allocations
    (``scratch``, default :func:`scratch_bytes`). With a ``target``, blocks are
    kept to about ``max(target, bytes of U)`` (see
    :func:`kernels.algorithms.winograd.plan_tile_blocks`).
    """
    tile_rows, tile_cols = algorithm.tile_grid_of(p, m)
    per_row, halo, u_bytes = _block_bytes(p, m)
    budget = cap - u_bytes - (scratch_bytes(p, m) if scratch is None else scratch)
    if target is not None:
        budget = min(budget, max(target, u_bytes))
    per_image = tile_rows * per_row + halo
    if per_image <= budget:
        return max(1, min(p.mb, budget // per_image)), tile_rows, tile_cols
    return 1, max(1, min(tile_rows, (budget - halo) // per_row)), tile_cols


def workspace_bytes(p: ConvProblem, m: int, block: tuple[int, int, int],
                    cap: int | None = None) -> int:
    """``U``, and one block's ``V``, ``M`` and zero-padded input rows (or, where the
    ``"blocks"`` schedule may run under ``cap`` and takes more, every thread's own), and
    the transforms' allocations; in ``prepare``, ``U`` beside its untransposed original."""
    nb, rows, _ = block
    per_row, halo, u_bytes = _block_bytes(p, m)
    buffers = nb * (rows * per_row + halo)
    n = team_of(num_threads()).n
    small = None if cap is None else thread_block(p, m, cap, n)
    if small is not None:
        buffers = max(buffers, n * small[0] * (small[1] * per_row + halo))
    return u_bytes + max(u_bytes, buffers + scratch_bytes(p, m, n))


class Team:
    """``n`` threads that split a range of work items, the caller being one of them.

    The workers are a thread pool that sleeps between calls (no spinning), and
    the jitted phases release the GIL, so the phases run truly in parallel.
    """

    def __init__(self, n: int) -> None:
        self.n = max(1, n)
        self.pool = ThreadPoolExecutor(self.n - 1) if self.n > 1 else None

    def split(self, fn: Callable[..., object], n_items: int, *args: object) -> None:
        """``fn(*args, lo, hi)`` over contiguous chunks of ``range(n_items)``, one per thread."""
        k = min(self.n, n_items)
        if k <= 1 or self.pool is None:
            fn(*args, 0, n_items)
            return
        bounds = [n_items * i // k for i in range(k + 1)]
        futures = [self.pool.submit(fn, *args, bounds[i], bounds[i + 1]) for i in range(1, k)]
        fn(*args, bounds[0], bounds[1])
        for f in futures:
            f.result()


_TEAMS: dict[int, Team] = {}


def team_of(n: int) -> Team:
    """The process's team of ``n`` threads (one pool per thread count, shared by every call)."""
    if n not in _TEAMS:
        _TEAMS[n] = Team(n)
    return _TEAMS[n]
