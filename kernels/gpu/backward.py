"""Backward passes of the GPU kernels: the math of the CPU kernels, in CUDA C, cuBLAS and cuFFT.

Each GPU kernel's ``prepare_call`` hands a backward problem to the function
of its algorithm here (operands in ``torch.nn.grad``'s order: ``(dy, w)``
for bwd_d, ``(x, dy)`` for bwd_w and bwd_wb; the call takes the same).

* **direct**: ``direct_bwd_data`` gathers, per input pixel, the taps that
  reach it (stride-aware ranges, no atomics); bwd_w sums each weight's
  products over chunks of images (``direct_bwd_weights_partial``) and the
  chunks in order (``direct_bwd_weights_reduce``).
* **im2col**: bwd_d is ``col = W^T dY`` (one GEMM per group, the transposed
  weights made once) followed by ``col2im``; bwd_w lowers ``x`` as the
  forward does and accumulates ``dW += dY col^T`` tile by tile.
* **fft**: the whole-image adjoints of :mod:`kernels.algorithms.fft`, with
  the frequency-major cuFFT layout of the forward and one strided-batched
  complex GEMM per batch (over ``K/g`` for bwd_d, over the images for bwd_w).
* **winograd**: bwd_d is the forward F(2x2,3x3) kernel on ``dy`` with the
  rotated, swapped filter (:func:`kernels.algorithms.winograd_backward.data_problem`);
  bwd_w is F(3x3,2x2): the forward's ``winograd_input`` over ``dy``'s tile
  grid, ``winograd_grad_tiles``, 16 GEMMs per group summed over blocks, and
  ``A'^T M A'`` once, in float64.

The bias gradient (bwd_wb) is one reduction over (N, P, Q) in float64,
rounded once. float16 data is summed in float32 everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convbench.problem import ConvProblem

from ..algorithms import fft as fft_algorithm
from ..algorithms import winograd_backward as winograd_algorithm
from ..algorithms.fft import COMPLEX
from ..algorithms.im2col import plan_lowering
from ..algorithms.tiling import iter_tiles
from .base import WORK_DTYPE
from .gemm import gemm_compute
from .runtime import Int64, elementwise_grid, row_grid
from .sources import CudaSource, kernel_name

SOURCE = CudaSource("backward", ("direct_bwd_data", "direct_bwd_weights_partial",
                                 "direct_bwd_weights_reduce", "col2im", "winograd_grad_tiles"))
#: Images per chunk of direct bwd_w's first pass: enough chunks to fill a GPU on
#: small filters, few enough that the partial sums stay small.
DIRECT_WEIGHT_CHUNK = 4


def acc_dtype(p: ConvProblem) -> Any:
    """Accumulation dtype of ``p``'s storage dtype (float32 for float16)."""
    return np.dtype(WORK_DTYPE[p.dtype])


def gradient_outputs(rt: Any, p: ConvProblem) -> tuple[Any, Any]:
    """The result buffers of ``p.dir``: ``(dx, None)``, ``(dw, None)`` or ``(dw, db)``."""
    xp = rt.xp
    if p.dir == "bwd_d":
        return xp.empty(p.input_shape, dtype=p.dtype), None
    db = xp.empty(p.oc, dtype=p.dtype) if p.dir == "bwd_wb" else None
    return xp.empty(p.weight_shape, dtype=p.dtype), db


def finish_weights(rt: Any, p: ConvProblem, dw: Any, db: Any, dy: Any) -> Any:
    """``dw``, or ``(dw, db)`` with ``db`` summed from ``dy`` in float64 (bwd_wb)."""
    if db is None:
        return dw
    db[...] = dy.reshape(p.mb, p.oc, p.oh * p.ow).sum(axis=2, dtype=rt.xp.float64).sum(axis=0)
    return dw, db


def operands(rt: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """Both operands on the device (host arrays copied here, in ``prepare``)."""
    return rt.asarray(a), rt.asarray(b)


def workspace_bytes(kernel: Any, p: ConvProblem) -> int:
    """Bytes a backward pass allocates beyond its operands and results."""
    acc = acc_dtype(p).itemsize
    if kernel.name == "direct":
        if p.dir == "bwd_d":
            return 0
        chunks = -(-p.mb // DIRECT_WEIGHT_CHUNK)
        return chunks * p.oc * (p.ic // p.g) * p.kh * p.kw * acc
    if kernel.name == "im2col":
        nb, rows = plan_lowering(p, kernel.workspace_cap)
        col = nb * p.ic * p.kh * p.kw * rows * p.ow
        if p.dir == "bwd_d":
            return col * acc + p.oc * (p.ic // p.g) * p.kh * p.kw * p.itemsize
        return 2 * col * p.itemsize + p.oc * (p.ic // p.g) * p.kh * p.kw * acc
    if kernel.name == "fft":
        plan = kernel.plan(p)
        return fft_algorithm.backward_workspace_bytes(p, plan, kernel.work_itemsize(p))
    if p.dir == "bwd_d":
        crop_h, crop_w = winograd_algorithm.data_crop(p)
        if crop_h >= p.oh or crop_w >= p.ow:
            return 0
        fp = winograd_algorithm.data_problem(p)
        cropped = fp.mb * fp.ic * fp.ih * fp.iw * p.itemsize if (crop_h, crop_w) != (0, 0) else 0
        return kernel.workspace_bytes(fp) + cropped
    isz = kernel.work_itemsize(p)
    block = winograd_algorithm.plan_weight_blocks(p, kernel.workspace_cap, isz)
    nb, rows, cols = block
    # V twice (as written and transposed for the GEMM)
    return (winograd_algorithm.weight_workspace_bytes(p, block, isz)
            + 16 * p.ic * nb * rows * cols * isz)


# ------------------------------------------------------------------------ direct
def prepare_direct(kernel: Any, p: ConvProblem, a: Any, b: Any) -> Callable[..., Any]:
    """Direct bwd_d (gather per input pixel) or bwd_w (two-pass reduction per weight)."""
    rt = kernel.runtime
    a_d, b_d = operands(rt, a, b)
    out, db = gradient_outputs(rt, p)
    geometry = [p.mb, p.ic, p.ih, p.iw, p.oc, p.kh, p.kw, p.oh, p.ow, p.sh, p.sw, p.ph, p.pw,
                p.dil_h, p.dil_w, p.g]
    if p.dir == "bwd_d":
        name = kernel_name("direct_bwd_data", p.dtype)
        grid = elementwise_grid(out.size)

        def run_data(dy: Any = a_d) -> Any:
            rt.launch(SOURCE, name, *grid, [dy, b_d, out, *geometry])
            return out

        return kernel.with_details(p, run_data, variant="direct_bwd_data")
    chunks = -(-p.mb // DIRECT_WEIGHT_CHUNK)
    partial = rt.xp.empty(chunks * out.size, dtype=acc_dtype(p))
    partial_name = kernel_name("direct_bwd_weights_partial", p.dtype)
    reduce_name = kernel_name("direct_bwd_weights_reduce", p.dtype)

    def run_weights(x: Any = a_d, dy: Any = b_d) -> Any:
        rt.launch(SOURCE, partial_name, *elementwise_grid(partial.size),
                  [x, dy, partial, *geometry, DIRECT_WEIGHT_CHUNK])
        rt.launch(SOURCE, reduce_name, *elementwise_grid(out.size),
                  [partial, out, Int64(out.size), chunks])
        return finish_weights(rt, p, out, db, dy)

    return kernel.with_details(p, run_weights, variant="direct_bwd_weights", chunks=chunks)


# ------------------------------------------------------------------------ im2col
def prepare_im2col(kernel: Any, p: ConvProblem, a: Any, b: Any,
                   lower_source: CudaSource) -> Callable[..., Any]:
    """im2col bwd_d (``W^T dY``, col2im) or bwd_w (``dW += dY im2col(x)^T``), in tiles."""
    rt = kernel.runtime
    xp = rt.xp
    compute = gemm_compute(p.math, p.dtype)
    a_d, b_d = operands(rt, a, b)
    out, db = gradient_outputs(rt, p)
    g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
    crs_g = cg * p.kh * p.kw
    nb, rows = plan_lowering(p, kernel.workspace_cap)
    tiles = list(iter_tiles(p.mb, p.oh, nb, rows))
    geometry = [p.ic, p.ih, p.iw]
    taps = [p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.ow]
    acc = acc_dtype(p)
    if p.dir == "bwd_d":
        w_t = xp.ascontiguousarray(b_d.reshape(g, kg, crs_g).transpose(0, 2, 1))
        col_flat = xp.empty(nb * p.ic * p.kh * p.kw * rows * p.ow, dtype=acc)
        name = kernel_name("col2im", p.dtype)

        def run_data(dy: Any = a_d) -> Any:
            dy_blocks = dy.reshape(p.mb, g, kg, p.oh * p.ow)
            for t in tiles:
                col = col_flat[:t.nb * g * crs_g * t.rows * p.ow].reshape(
                    t.nb, g, crs_g, t.rows * p.ow)
                block = dy_blocks[t.n0:t.n0 + t.nb, :, :, t.p0 * p.ow:(t.p0 + t.rows) * p.ow]
                for gi in range(g):
                    rt.matmul(xp.broadcast_to(w_t[gi], (t.nb, crs_g, kg)), block[:, gi],
                              col[:, gi], compute)
                rt.launch(SOURCE, name, *elementwise_grid(t.nb * p.ic * p.ih * p.iw),
                          [col, out, t.nb, *geometry, t.n0, t.p0, t.rows, *taps,
                           int(t.p0 > 0)])
            return out

        return kernel.with_details(p, run_data, tiles=len(tiles))
    col_flat = xp.empty(nb * p.ic * p.kh * p.kw * rows * p.ow, dtype=p.dtype)
    col_t_flat = xp.empty_like(col_flat)
    dw_acc = xp.empty((g, kg, crs_g), dtype=acc)
    lower = kernel_name("im2col_lower", p.dtype)

    def run_weights(x: Any = a_d, dy: Any = b_d) -> Any:
        dy_blocks = dy.reshape(p.mb, g, kg, p.oh * p.ow)
        first = True
        if not tiles:  # no images: nothing is summed
            dw_acc[...] = 0
        for t in tiles:
            size = t.nb * g * crs_g * t.rows * p.ow
            col = col_flat[:size].reshape(t.nb, g, crs_g, t.rows * p.ow)
            rt.launch(lower_source, lower, *row_grid(t.nb * p.ic * p.kh * p.kw, t.rows * p.ow),
                      [x, col, t.nb, *geometry, t.n0, t.p0, t.rows, *taps])
            col_t = col_t_flat[:size].reshape(t.nb, g, t.rows * p.ow, crs_g)
            col_t[...] = col.transpose(0, 1, 3, 2)
            block = dy_blocks[t.n0:t.n0 + t.nb, :, :, t.p0 * p.ow:(t.p0 + t.rows) * p.ow]
            for bi in range(t.nb):
                rt.matmul(block[bi], col_t[bi], dw_acc, compute, accumulate=not first)
                first = False
        out[...] = dw_acc.reshape(p.weight_shape)
        return finish_weights(rt, p, out, db, dy)

    return kernel.with_details(p, run_weights, tiles=len(tiles))


# --------------------------------------------------------------------------- fft
def prepare_fft(kernel: Any, p: ConvProblem, a: Any, b: Any,
                compute: str) -> Callable[..., Any]:
    """FFT bwd_d (``dY W``, cropped) or bwd_w (``sum_n X conj(dY)``, read at the taps)."""
    rt = kernel.runtime
    xp = rt.xp
    work = np.dtype(WORK_DTYPE[p.dtype])
    cplx = COMPLEX[work]
    plan = kernel.plan(p)
    lh, lw, freqs = plan.lh, plan.lw, plan.freqs
    g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
    scale = 1.0 / (lh * lw)  # cuFFT's inverse is unnormalized
    out, db = gradient_outputs(rt, p)
    batches = [(n0, min(plan.batch, p.mb - n0)) for n0 in range(0, p.mb, plan.batch)]
    stuffed = xp.zeros((plan.batch, p.oc, lh, lw), dtype=work)  # zero once: calls write the grid
    grid = (slice(None), slice(None), slice(0, p.oh * p.sh, p.sh), slice(0, p.ow * p.sw, p.sw))
    dy_spec_buf = xp.empty(freqs * plan.batch * p.oc, dtype=cplx)

    def dy_spectra(dy: Any, n0: int, nb: int) -> Any:
        stuffed[:nb][grid] = dy[n0:n0 + nb]
        spec = dy_spec_buf[:freqs * nb * p.oc].reshape(freqs, nb * p.oc)
        rt.rfft2_by_frequency(stuffed[:nb].reshape(nb * p.oc, lh, lw), spec)
        return spec

    if p.dir == "bwd_d":
        w_host = b.get() if hasattr(b, "get") else np.asarray(b)
        spectra = rt.asarray(fft_algorithm.adjoint_filter_spectra(w_host, p, plan, work,
                                                                  scale=scale))
        w_spec = spectra.reshape(freqs * g, kg, cg)
        dy_d = rt.asarray(a)
        x_spec_buf = xp.empty(freqs * plan.batch * p.ic, dtype=cplx)
        tiles_buf = xp.empty(plan.batch * p.ic * lh * lw, dtype=work)
        # group-major copies of both spectra: one GEMM per (frequency, group)
        dy_groups_buf = xp.empty(freqs * plan.batch * p.oc, dtype=cplx)
        dx_groups_buf = xp.empty(freqs * plan.batch * p.ic, dtype=cplx)

        def run_data(dy: Any = dy_d) -> Any:
            for n0, nb in batches:
                spec = dy_spectra(dy, n0, nb)
                dy_groups = dy_groups_buf[:spec.size].reshape(freqs, g, nb, kg)
                dy_groups[...] = spec.reshape(freqs, nb, g, kg).transpose(0, 2, 1, 3)
                dx_groups = dx_groups_buf[:freqs * nb * p.ic].reshape(freqs, g, nb, cg)
                rt.matmul(dy_groups.reshape(freqs * g, nb, kg), w_spec,
                          dx_groups.reshape(freqs * g, nb, cg), compute)
                x_spec = x_spec_buf[:freqs * nb * p.ic].reshape(freqs, nb * p.ic)
                x_spec.reshape(freqs, nb, g, cg)[...] = dx_groups.transpose(0, 2, 1, 3)
                tiles = tiles_buf[:nb * p.ic * lh * lw].reshape(nb * p.ic, lh, lw)
                rt.irfft2_by_frequency(x_spec, tiles)
                out[n0:n0 + nb] = tiles.reshape(nb, p.ic, lh, lw)[:, :, :p.ih, :p.iw]
            return out

        return kernel.with_details(p, run_data, fft_shape=[lh, lw], batches=len(batches))

    x_d, dy_d = operands(rt, a, b)
    padded = xp.zeros((plan.batch, p.ic, lh, lw), dtype=work)
    x_spec_buf = xp.empty(freqs * plan.batch * p.ic, dtype=cplx)
    total = xp.empty((freqs * g, cg, kg), dtype=cplx)
    rows, cols = (rt.asarray(v) for v in fft_algorithm.tap_positions(p, plan))
    full = xp.empty((p.oc * cg, lh, lw), dtype=work)

    def run_weights(x: Any = x_d, dy: Any = dy_d) -> Any:
        if not batches:  # no images: nothing is summed
            total[...] = 0
        for i, (n0, nb) in enumerate(batches):
            padded[:nb, :, :p.ih, :p.iw] = x[n0:n0 + nb]
            x_spec = x_spec_buf[:freqs * nb * p.ic].reshape(freqs, nb * p.ic)
            rt.rfft2_by_frequency(padded[:nb].reshape(nb * p.ic, lh, lw), x_spec)
            y_spec = dy_spectra(dy, n0, nb)
            # (F G, C/g, nb) @ conj (F G, nb, K/g): the sum over images is the GEMM's
            xa = xp.ascontiguousarray(x_spec.reshape(freqs, nb, g, cg).transpose(0, 2, 3, 1))
            yb = xp.ascontiguousarray(xp.conj(y_spec.reshape(freqs, nb, g, kg)
                                              .transpose(0, 2, 1, 3)))
            rt.matmul(xa.reshape(freqs * g, cg, nb), yb.reshape(freqs * g, nb, kg), total,
                      compute, accumulate=i > 0)
        spec = xp.ascontiguousarray(total.reshape(freqs, g, cg, kg).transpose(0, 1, 3, 2))
        rt.irfft2_by_frequency(spec.reshape(freqs, p.oc * cg), full)
        taps = full.reshape(p.oc, cg, lh, lw)[:, :, rows[:, None], cols[None, :]]
        out[...] = taps * scale
        return finish_weights(rt, p, out, db, dy)

    return kernel.with_details(p, run_weights, fft_shape=[lh, lw], batches=len(batches))


# ---------------------------------------------------------------------- winograd
def prepare_winograd(kernel: Any, p: ConvProblem, a: Any, b: Any, input_source: CudaSource,
                     stages: tuple[str, str], compute: str) -> Callable[..., Any]:
    """Winograd bwd_d (the forward kernel on ``dy``) or bwd_w (F(3x3,2x2))."""
    rt = kernel.runtime
    xp = rt.xp
    if p.dir == "bwd_d":
        crop_h, crop_w = winograd_algorithm.data_crop(p)
        if crop_h >= p.oh or crop_w >= p.ow:
            dx = xp.zeros(p.input_shape, dtype=p.dtype)
            return kernel.with_details(p, lambda dy=None: dx)
        fp = winograd_algorithm.data_problem(p)
        rotated = winograd_algorithm.rotated_filter(rt.asarray(b), p.g)
        dy_d = rt.asarray(a)
        if (crop_h, crop_w) == (0, 0):
            forward = kernel.prepare_call(fp, dy_d, rotated, None)
            return kernel.with_details(p, lambda dy=dy_d: forward(dy), forward_problem=str(fp))
        cropped = xp.ascontiguousarray(dy_d[:, :, crop_h:, crop_w:])
        forward = kernel.prepare_call(fp, cropped, rotated, None)

        def run_cropped(dy: Any = dy_d) -> Any:
            cropped[...] = dy[:, :, crop_h:, crop_w:]
            return forward(cropped)

        return kernel.with_details(p, run_cropped, forward_problem=str(fp))
    uv, m_dtype = stages
    g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
    x_d, dy_d = operands(rt, a, b)
    out, db = gradient_outputs(rt, p)
    nb, rows, cols = winograd_algorithm.plan_weight_blocks(p, kernel.workspace_cap,
                                                           kernel.work_itemsize(p))
    tile_rows, _ = winograd_algorithm.weight_tile_grid(p)
    v_flat = xp.empty(16 * p.ic * nb * rows * cols, dtype=uv)
    v_t_flat = xp.empty_like(v_flat)
    u_flat = xp.empty(16 * p.oc * nb * rows * cols, dtype=uv)
    m = xp.empty((16 * g, kg, cg), dtype=m_dtype)
    name_in = kernel_name("winograd_input", p.dtype)
    name_grad = kernel_name("winograd_grad_tiles", p.dtype)
    blocks = [(n0, min(nb, p.mb - n0), tr0, min(rows, tile_rows - tr0))
              for n0 in range(0, p.mb, nb) for tr0 in range(0, tile_rows, rows)]

    def run_weights(x: Any = x_d, dy: Any = dy_d) -> Any:
        if not blocks:  # no images: nothing is summed
            m[...] = 0
        for i, (n0, count, tr0, n_rows) in enumerate(blocks):
            tiles = count * n_rows * cols
            v = v_flat[:16 * p.ic * tiles].reshape(16 * g, cg, tiles)
            u = u_flat[:16 * p.oc * tiles].reshape(16 * g, kg, tiles)
            rt.launch(input_source, name_in, *elementwise_grid(p.ic * tiles),
                      [x, v, p.ic, p.ih, p.iw, n0, count, tr0, n_rows, cols, p.ph, p.pw])
            rt.launch(SOURCE, name_grad, *elementwise_grid(p.oc * tiles),
                      [dy, u, p.oc, p.oh, p.ow, n0, count, tr0, n_rows, cols])
            v_t = v_t_flat[:16 * p.ic * tiles].reshape(16 * g, tiles, cg)
            v_t[...] = v.transpose(0, 2, 1)
            rt.matmul(u, v_t, m, compute, accumulate=i > 0)
        out[...] = winograd_algorithm.weight_output_transform(m.reshape(4, 4, p.oc, cg), xp)
        return finish_weights(rt, p, out, db, dy)

    return kernel.with_details(p, run_weights, blocks=len(blocks))
