"""im2col + GEMM on the CPU: a Numba lowering kernel, then one batched BLAS GEMM per tile.

The lowered layout and the tiling are :mod:`kernels.algorithms.im2col`'s:
for each tile of images (or of output rows, when one image's lowered matrix
would exceed the workspace cap) :func:`im2col_lower` writes the lowered
matrix straight in the layout ``numpy.matmul`` consumes, and the GEMM's
output is the NCHW output block: no transpose afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange

from convbench.contract import Prepared
from convbench.problem import DIRECTIONS, ConvProblem
from convbench.problem.arguments import aligned_empty

from ..algorithms.im2col import (
    folded_bytes,
    is_pointwise_gemm,
    lowered_bytes,
    lowered_row_bytes,
    plan_lowering,
)
from ..algorithms.tiling import iter_tiles, plan_tiles
from .base import CpuKernel, add_bias, empty_input, empty_output, empty_weights, fastest
from .direct_backward import bias_gradient


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
            # Clamped to the row: a left padding wider than the row leaves lo > out_w.
            lo = min(out_w, max(0, (-offset + sw - 1) // sw))
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


@njit(parallel=True, cache=True)
def col2im_add(col, dx, n0, p0, rows, kh, kw, sh, sw, pt, pl, dh, dw, out_w):
    """Add the lowered matrix of images ``n0:n0+nb``, output rows ``p0:p0+rows``, back into
    ``dx`` (the adjoint of :func:`im2col_lower`).

    One work item per (image, channel) plane of ``dx``: the overlapping
    windows of a plane are summed by the thread that owns it, so no element
    is written by two threads.
    """
    nb = col.shape[0]
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    for item in prange(nb * channels):
        b = item // channels
        c = item % channels
        for r in range(kh):
            for s in range(kw):
                crow = col[b, (c * kh + r) * kw + s]
                offset = s * dw - pl
                lo = max(0, (-offset + sw - 1) // sw)
                hi = min(out_w, (width - 1 - offset) // sw + 1)
                if hi <= lo:
                    continue
                for pp in range(rows):
                    row = (p0 + pp) * sh - pt + r * dh
                    if row < 0 or row >= height:
                        continue
                    src = crow[pp * out_w + lo:pp * out_w + hi]
                    dxrow = dx[n0 + b, c, row]
                    if sw == 1:
                        dst = dxrow[lo + offset:hi + offset]
                        for q in range(hi - lo):
                            dst[q] += src[q]
                    else:
                        dst_strided = dxrow[lo * sw + offset:(hi - 1) * sw + offset + 1:sw]
                        for q in range(hi - lo):
                            dst_strided[q] += src[q]


@njit(parallel=True, cache=True)
def transpose_into(src, dst):
    """``dst[g] = src[g].T`` for 3-D arrays, in 32 x 32 blocks.

    A plain strided copy reads ``src`` a column at a time, one cache line and
    often one page per element; the blocks keep both sides' lines in cache.
    """
    groups, rows, cols = src.shape
    block = 32
    row_blocks = -(-rows // block)
    col_blocks = -(-cols // block)
    for item in prange(groups * row_blocks):
        g = item // row_blocks
        r0 = (item % row_blocks) * block
        r1 = min(rows, r0 + block)
        for cb in range(col_blocks):
            c0 = cb * block
            c1 = min(cols, c0 + block)
            for c in range(c0, c1):
                out = dst[g, c]
                for r in range(r0, r1):
                    out[r] = src[g, r, c]


def products_bytes(p: ConvProblem) -> int:
    """A 1x1 layer's bwd_w: each image's ``dY X^T``, summed into ``dw`` afterwards."""
    return p.mb * p.oc * p.reduction_length * p.itemsize


class Im2colKernel(CpuKernel):
    """im2col lowering + one batched BLAS GEMM per tile; every parameter combination.

    Parameters
    ----------
    workspace_cap : int
        Upper bound on the lowered-matrix bytes of one tile.
    """

    name = "im2col"
    family = "direct"
    uses_libraries = True
    directions = DIRECTIONS
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    #: bwd_w's lowered tile, at most: each tile is written by the lowering and read
    #: straight back by the GEMM, which can then find it in the last-level cache (8 MiB:
    #: a quarter of a 32 MiB L3). Exploratory timing on a loaded machine suggested 2-4x;
    #: the interleaved ResNet-50 batch-8 run moved its 3x3 layers by a few percent only
    #: (results/cpu/vs_onednn_backward_resnet50_mb8.md): the GEMM, not memory, limits it.
    backward_weights_tile_bytes = 8 * 2**20

    def plan(self, p: ConvProblem) -> tuple[int, int]:
        """Images and output rows per tile.

        bwd_w's tiles hold, per output row, ``dy``'s row beside the lowered one,
        and ``dW^T`` with one tile's part beside it besides the tiles.
        """
        if p.dir in ("bwd_w", "bwd_wb"):
            row = lowered_row_bytes(p, p.itemsize) + p.oc * p.ow * p.itemsize
            room = self.tiling_cap - 2 * p.oc * p.reduction_length * p.itemsize
            return plan_tiles(p.mb, p.oh, row, min(room, self.backward_weights_tile_bytes))
        return plan_lowering(p, self.tiling_cap)

    def folds_batch(self, p: ConvProblem) -> bool:
        """Whether a forward 1x1 layer may run as one GEMM over the whole batch.

        ``W (K, C) @ X (C, N*H*W)`` reads the weights once, where one GEMM
        per image reads them ``N`` times over a narrow ``H*W``; it costs a
        transposed copy of the input and of the output, within the cap.
        """
        return (p.dir == "fwd" and is_pointwise_gemm(p) and p.g == 1 and p.mb > 1
                and folded_bytes(p) <= self.tiling_cap)

    def folds_weights(self, p: ConvProblem) -> bool:
        """Whether a 1x1 layer's bwd_w may run as one GEMM over the batch: as the forward
        (:meth:`folds_batch`), with the per-image products, timed beside it, in the cap."""
        return (self.folds_batch(p.with_(dir="fwd"))
                and folded_bytes(p) + products_bytes(p) <= self.tiling_cap)

    def workspace_bytes(self, p: ConvProblem) -> int:
        """BLAS's allowance (:data:`~kernels.cpu.base.LIBRARY_BYTES`) and the arrays."""
        return self.with_libraries(self.arrays_bytes(p))

    def arrays_bytes(self, p: ConvProblem) -> int:
        """The lowered tile (forward, bwd_d), with bwd_w's side-by-side ``dy`` and sums;
        for a 1x1 layer, the transposed copies of a folded batch and bwd_w's per-image
        products, both held while ``prepare`` times one against the other."""
        if self.folds_batch(p):
            return folded_bytes(p)
        if p.dir in ("bwd_w", "bwd_wb"):
            if is_pointwise_gemm(p):  # each image's product, summed into dw
                return products_bytes(p) + (folded_bytes(p) if self.folds_weights(p) else 0)
            # The lowered tile, dy's tile side by side when it has several images, and
            # dW^T with one tile's part beside it.
            nb, rows = self.plan(p)
            dy_tile = p.oc * nb * rows * p.ow * p.itemsize if nb > 1 else 0
            tiles = -(-p.mb // nb) * -(-p.oh // rows)
            sums = (2 if tiles > 1 else 1) * p.oc * p.reduction_length * p.itemsize
            return lowered_bytes(p, nb, rows) + dy_tile + sums
        return 0 if is_pointwise_gemm(p) else lowered_bytes(p, *self.plan(p))

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[..., Any]:
        if p.dir == "bwd_d":
            return self._prepare_backward_data(p, x, w)
        if p.dir in ("bwd_w", "bwd_wb"):
            return self._prepare_backward_weights(p, x, w)
        g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
        y = empty_output(p)
        y_blocks = y.reshape(p.mb, g, kg, p.oh * p.ow)
        w_mat = w.reshape(g, kg, cg * p.kh * p.kw)

        if is_pointwise_gemm(p):
            return self._prepare_pointwise(p, x, w_mat, bias, y)

        nb, rows = self.plan(p)
        tiles = list(iter_tiles(p.mb, p.oh, nb, rows))
        crs = p.ic * p.kh * p.kw
        # Flat buffer: its prefix viewed as (nb', CRS, rows'*Q) is contiguous for
        # any tile size, so short last tiles need no copies.
        col_flat = np.empty(nb * crs * rows * p.ow, dtype=p.dtype)
        geometry = (p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.ow)

        def run(x: np.ndarray = x) -> np.ndarray:
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

    def _prepare_pointwise(self, p: ConvProblem, x: np.ndarray, w_mat: np.ndarray,
                           bias: np.ndarray | None, y: np.ndarray) -> Prepared:
        """A forward 1x1 layer: a GEMM per image, or one over the batch where that is faster.

        Which is faster depends on the shape and on the BLAS build, so where
        the batch may be folded (:meth:`folds_batch`) both are timed on ``x``
        here and the faster kept; the record's details name it.
        """
        hw = p.ih * p.iw
        y_blocks = y.reshape(p.mb, p.g, p.oc // p.g, hw)

        def per_image(x: np.ndarray) -> None:
            np.matmul(w_mat, x.reshape(p.mb, p.g, p.ic // p.g, hw), out=y_blocks)

        gemms: dict[str, Callable[[np.ndarray], None]] = {"per-image": per_image}
        if self.folds_batch(p):
            x_t = np.empty((p.ic, p.mb, hw), dtype=p.dtype)
            y_t = np.empty((p.oc, p.mb * hw), dtype=p.dtype)

            def batch(x: np.ndarray) -> None:
                np.copyto(x_t, x.reshape(p.mb, p.ic, hw).transpose(1, 0, 2))
                np.matmul(w_mat[0], x_t.reshape(p.ic, p.mb * hw), out=y_t)
                np.copyto(y.reshape(p.mb, p.oc, hw), y_t.reshape(p.oc, p.mb, hw).transpose(1, 0, 2))

            gemms["batch"] = batch
        choice = "per-image"
        if len(gemms) > 1:
            choice = fastest({name: (lambda gemm=gemm: gemm(x)) for name, gemm in gemms.items()},
                             key=("im2col pointwise", str(p)))
        gemm = gemms[choice]

        def run_pointwise(x: np.ndarray = x) -> np.ndarray:
            gemm(x)
            if bias is not None:
                add_bias(y, bias)
            return y

        return Prepared(run_pointwise, {"gemm": choice})

    def _prepare_backward_data(self, p: ConvProblem, dy: np.ndarray,
                               w: np.ndarray) -> Callable[..., np.ndarray]:
        """``dx = col2im(W^T dY)``, tile by tile; the call is ``run(dy)``."""
        g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
        dx = empty_input(p)
        # A transposed view: BLAS reads it with its transpose flag, no copy.
        wt = w.reshape(g, kg, cg * p.kh * p.kw).transpose(0, 2, 1)

        if is_pointwise_gemm(p):
            dx_blocks = dx.reshape(p.mb, g, cg, p.ih * p.iw)

            def run_pointwise(dy: np.ndarray = dy) -> np.ndarray:
                np.matmul(wt, dy.reshape(p.mb, g, kg, p.oh * p.ow), out=dx_blocks)
                return dx

            return run_pointwise

        nb, rows = self.plan(p)
        tiles = list(iter_tiles(p.mb, p.oh, nb, rows))
        crs = p.ic * p.kh * p.kw
        col_flat = np.empty(nb * crs * rows * p.ow, dtype=p.dtype)
        geometry = (p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.ow)

        def run(dy: np.ndarray = dy) -> np.ndarray:
            dx[...] = 0  # input pixels no window reads keep a zero gradient
            dy_blocks = dy.reshape(p.mb, g, kg, p.oh * p.ow)
            for t in tiles:
                tile_col = col_flat[:t.nb * crs * t.rows * p.ow].reshape(t.nb, crs, t.rows * p.ow)
                block = dy_blocks[t.n0:t.n0 + t.nb, :, :, t.p0 * p.ow:(t.p0 + t.rows) * p.ow]
                np.matmul(wt, block, out=tile_col.reshape(t.nb, g, crs // g, t.rows * p.ow))
                col2im_add(tile_col, dx, t.n0, t.p0, t.rows, *geometry)
            return dx

        return run

    def _prepare_pointwise_weights(self, p: ConvProblem, x: np.ndarray, dy: np.ndarray,
                                   dw_mat: np.ndarray, finish: Callable[[np.ndarray], Any]
                                   ) -> Prepared:
        """A 1x1 layer's ``dW``: per-image products summed, or one GEMM over the batch.

        ``dW = dY (K, N*H*W) @ X (C, N*H*W)^T`` over transposed copies reduces
        over the whole batch inside BLAS; which is faster is timed here, as
        for the forward pass (:meth:`_prepare_pointwise`).
        """
        g, kg, cg, hw = p.g, p.oc // p.g, p.ic // p.g, p.ih * p.iw
        products = np.empty((p.mb, g, kg, cg), dtype=p.dtype)

        def per_image(x: np.ndarray, dy: np.ndarray) -> None:
            lowered = x.reshape(p.mb, g, cg, hw).transpose(0, 1, 3, 2)
            np.matmul(dy.reshape(p.mb, g, kg, hw), lowered, out=products)
            np.sum(products, axis=0, out=dw_mat)

        gemms: dict[str, Callable[[np.ndarray, np.ndarray], None]] = {"per-image": per_image}
        if self.folds_weights(p):
            x_t = np.empty((p.ic, p.mb, hw), dtype=p.dtype)
            dy_t = np.empty((p.oc, p.mb, hw), dtype=p.dtype)

            def batch(x: np.ndarray, dy: np.ndarray) -> None:
                np.copyto(x_t, x.reshape(p.mb, p.ic, hw).transpose(1, 0, 2))
                np.copyto(dy_t, dy.reshape(p.mb, p.oc, hw).transpose(1, 0, 2))
                np.matmul(dy_t.reshape(p.oc, p.mb * hw), x_t.reshape(p.ic, p.mb * hw).T,
                          out=dw_mat[0])

            gemms["batch"] = batch
        choice = "per-image"
        if len(gemms) > 1:
            choice = fastest({name: (lambda gemm=gemm: gemm(x, dy))
                              for name, gemm in gemms.items()}, key=("im2col pointwise", str(p)))
        gemm = gemms[choice]

        def run_pointwise(x: np.ndarray = x, dy: np.ndarray = dy) -> Any:
            gemm(x, dy)
            return finish(dy)

        return Prepared(run_pointwise, {"gemm": choice})

    def _prepare_backward_weights(self, p: ConvProblem, x: np.ndarray,
                                  dy: np.ndarray) -> Callable[..., Any]:
        """``dW = sum over tiles of dY col^T`` (and ``db``); the call is ``run(x, dy)``.

        A tile's images sit side by side in its lowered matrix, so one GEMM
        reduces over them all; ``details["gemm"]`` says which of ``dY col^T``
        and ``(col dY^T)^T`` ``prepare`` timed faster.
        """
        g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
        crs_g = cg * p.kh * p.kw
        dw = empty_weights(p)
        dw_mat = dw.reshape(g, kg, crs_g)
        db = aligned_empty((p.oc,), p.dtype) if p.dir == "bwd_wb" else None

        def finish(dy: np.ndarray) -> Any:
            if db is None:
                return dw
            bias_gradient(dy, db)
            return dw, db

        if is_pointwise_gemm(p):
            return self._prepare_pointwise_weights(p, x, dy, dw_mat, finish)

        nb, rows = self.plan(p)
        tiles = list(iter_tiles(p.mb, p.oh, nb, rows))
        crs = p.ic * p.kh * p.kw
        # The tile's lowered matrix is (C*R*S, images, rows*Q): its images side by side,
        # so that one GEMM reduces over all of them.
        col_flat = np.empty(nb * crs * rows * p.ow, dtype=p.dtype)
        dy_flat = np.empty(nb * p.oc * rows * p.ow if nb > 1 else 0, dtype=p.dtype)
        dw_t = np.empty((g, crs_g, kg), dtype=p.dtype)
        part = np.empty((g, kg, crs_g) if len(tiles) > 1 else 0, dtype=p.dtype)
        geometry = (p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.ow)

        def operands(x: np.ndarray, dy: np.ndarray, t: Any) -> tuple[np.ndarray, np.ndarray]:
            """The tile's lowered ``X`` (G, C/g*R*S, L) and ``dY`` (G, K/g, L)."""
            length = t.nb * t.rows * p.ow
            span = slice(t.p0 * p.ow, (t.p0 + t.rows) * p.ow)
            tile_col = col_flat[:crs * length].reshape(crs, t.nb, t.rows * p.ow)
            im2col_lower(x, tile_col.transpose(1, 0, 2), t.n0, t.p0, t.rows, *geometry)
            dy_blocks = dy.reshape(p.mb, g, kg, p.oh * p.ow)
            if t.nb == 1:  # a strided view BLAS reads as it is
                block = dy_blocks[t.n0, :, :, span]
            else:
                block = dy_flat[:p.oc * length].reshape(g, kg, t.nb, t.rows * p.ow)
                np.copyto(block, dy_blocks[t.n0:t.n0 + t.nb, :, :, span].transpose(1, 2, 0, 3))
                block = block.reshape(g, kg, length)
            return tile_col.reshape(g, crs_g, length), block

        def dw_direct(x: np.ndarray, dy: np.ndarray) -> None:
            """``dW = dY col^T``, written into dw."""
            for i, t in enumerate(tiles):
                col, block = operands(x, dy, t)
                np.matmul(block, col.transpose(0, 2, 1), out=dw_mat if i == 0 else part)
                if i:
                    np.add(dw_mat, part, out=dw_mat)

        def dw_transposed(x: np.ndarray, dy: np.ndarray) -> None:
            """``dW^T = col dY^T``, the long side of the output first, then transposed."""
            for i, t in enumerate(tiles):
                col, block = operands(x, dy, t)
                out = dw_t if i == 0 else part.reshape(g, crs_g, kg)
                np.matmul(col, block.transpose(0, 2, 1), out=out)
                if i:
                    np.add(dw_t, out, out=dw_t)
            transpose_into(dw_t, dw_mat)

        # Which GEMM is faster depends on the shape and the BLAS build (with K = 64,
        # OpenBLAS ran dW^T 1.4x faster; with K = 512, equally fast, and the transpose
        # then costs), so both are timed here on the operands given.
        gemms = {"dY.colT": dw_direct, "col.dYT": dw_transposed}
        choice = fastest({name: (lambda gemm=gemm: gemm(x, dy)) for name, gemm in gemms.items()},
                         key=("im2col bwd_w", str(p), self.workspace_cap))
        gemm = gemms[choice]

        def run(x: np.ndarray = x, dy: np.ndarray = dy) -> Any:
            gemm(x, dy)
            return finish(dy)

        return Prepared(run, {"gemm": choice, "tiles": len(tiles)})


KERNELS = [Im2colKernel()]
