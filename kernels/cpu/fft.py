"""FFT convolution on the CPU: pocketfft (``scipy.fft``), Numba gather and scatter, one
batched complex GEMM per batch of tiles.

The plan (FFT lengths, outputs per tile, tiles per batch under the workspace
cap), the filter spectra and the whole-image path are
:mod:`kernels.algorithms.fft`'s. Per batch of tiles: :func:`gather_tiles`
copies zero-padded input tiles, ``rfft2`` transforms them,
:func:`correlate_spectra` contracts channels per frequency and returns to
space, and :func:`scatter_outputs` keeps every stride-th valid value and adds
the bias. Small images take the whole-image path, with no gather.

The backward passes (:func:`prepare_backward`) transform whole images, as
:mod:`kernels.algorithms.fft` derives them: backward data zero-stuffs ``dy``
onto the stride grid, multiplies its spectra by the unconjugated filter
spectra (one batched GEMM over ``K/g`` per frequency) and crops the inverse
to the image; backward weights sums ``X conj(dY)`` over the batch per
frequency (one batched GEMM over the images) and reads the inverse at the
filter taps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import scipy.fft
from numba import njit, prange

from convbench.contract import ErrorModel
from convbench.problem import ConvProblem
from convbench.problem.arguments import aligned_empty

from ..algorithms import fft as algorithm
from ..algorithms.fft import COMPLEX, FftPlan, filter_spectra, plan_fft, whole_image_path
from . import fft_workspace as workspace
from .base import CpuKernel, bias_or_zeros, empty_output, num_threads

tile_position = njit(cache=True, inline="always")(algorithm.tile_position)


@njit(parallel=True, cache=True)
def gather_tiles(x, tiles, t0, tile_rows, tile_cols, step_h, step_w, pt, pl):
    """Copy input tiles ``t0:t0+B`` (zero outside the image) into ``tiles``."""
    n_batch, channels, lh, lw = tiles.shape
    height, width = x.shape[2], x.shape[3]
    for item in prange(n_batch * channels):
        b = item // channels
        c = item % channels
        n, ti, tj = tile_position(t0 + b, tile_rows, tile_cols)
        row0 = ti * step_h - pt
        col0 = tj * step_w - pl
        for a in range(lh):
            row = row0 + a
            if row < 0 or row >= height:
                for e in range(lw):
                    tiles[b, c, a, e] = 0
                continue
            for e in range(lw):
                col = col0 + e
                tiles[b, c, a, e] = x[n, c, row, col] if 0 <= col < width else 0


@njit(parallel=True, cache=True)
def scatter_outputs(out, bias, y, t0, tile_rows, tile_cols, th, tw, sh, sw):
    """Keep every ``stride``-th correlation value of tiles ``t0:t0+B``, add bias."""
    n_batch, k_total = out.shape[0], out.shape[1]
    out_h, out_w = y.shape[2], y.shape[3]
    for item in prange(n_batch * k_total):
        b = item // k_total
        k = item % k_total
        n, ti, tj = tile_position(t0 + b, tile_rows, tile_cols)
        p0 = ti * th
        q0 = tj * tw
        bk = bias[k]
        for a in range(min(th, out_h - p0)):
            for e in range(min(tw, out_w - q0)):
                y[n, k, p0 + a, q0 + e] = out[b, k, a * sh, e * sw] + bk


def correlate_spectra(spec: np.ndarray, spectra: np.ndarray, p: ConvProblem, plan: FftPlan,
                      workers: int) -> np.ndarray:
    """Tile spectra ``(B, C, L_h, L_w/2+1)`` times filter spectra, back to ``(B, K, L_h, L_w)``.

    The channel contraction per (frequency, group) is one batched complex GEMM
    (a broadcast product when each group has one channel).
    """
    nb, g, cg = spec.shape[0], p.g, p.ic // p.g
    xt = np.ascontiguousarray(spec.reshape(nb, g, cg, plan.freqs).transpose(3, 1, 0, 2))
    # NaN/Inf inputs give NaN spectra by design; the output shows them,
    # so NumPy's floating-point warnings would only be noise.
    with np.errstate(invalid="ignore", over="ignore"):
        yt = xt * spectra if cg == 1 else np.matmul(xt, spectra)
    del xt  # each copy is dropped once used: the workspace counts two at a time
    ys = np.ascontiguousarray(yt.transpose(2, 1, 3, 0), dtype=COMPLEX[np.dtype(p.dtype)])
    del yt
    return scipy.fft.irfft2(ys.reshape(nb, p.oc, plan.lh, plan.lw // 2 + 1),
                            s=(plan.lh, plan.lw), workers=workers)


def fft_workers(elements: int) -> int:
    """pocketfft threads for a batch of ``elements`` real values.

    Profile on 2 cores (median of 30 calls each): ``irfft2`` of 8x128x18x18
    values took 1.9 ms on one thread and 1.3 ms on two, of 8x32x32x32 0.82 and
    0.47 ms; of 1x128x18x18 0.27 ms either way. Below ~2^18 values a second
    thread only adds hand-offs with Numba's and OpenBLAS's pools.
    """
    return num_threads() if elements >= FFT_PARALLEL_MIN_ELEMENTS else 1


#: Real values per FFT call from which pocketfft gets all threads (see fft_workers).
FFT_PARALLEL_MIN_ELEMENTS = 1 << 18


class FftKernel(CpuKernel):
    """FFT (overlap-save) convolution; every parameter combination.

    Over the cap, the forward pass takes fewer tiles per batch and smaller tiles
    (:func:`~kernels.algorithms.fft.plan_fft`), a backward pass fewer images per
    batch, and the tap-factored path, which keeps no ``K C/g F`` spectra, where
    the stored spectra do not fit (:mod:`kernels.cpu.fft_workspace`); where even
    the smallest of those is over the cap, ``supports`` refuses the problem with
    the bytes it would need.

    Parameters
    ----------
    workspace_cap : int, optional
        Upper bound on what a prepared call holds beyond its operands: the
        filter (or gradient, or taps') spectra it keeps, one batch of tiles or
        images and their spectra, the filter transform's temporaries.
    """

    name = "fft"
    family = "fft"
    uses_libraries = True  # counted in kernels.cpu.fft_workspace
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    caches_weights = True  # filter spectra, once per weight tensor

    def plan(self, p: ConvProblem) -> FftPlan:
        """The FFT sizes and batch of ``p`` under the cap; over it, the smallest plan."""
        if p.dir != "fwd":
            return workspace.plan_backward(p, self.workspace_cap)
        cap = self.workspace_cap
        # plan_fft models the spectra and a batch of tiles; the libraries' allowance and
        # the filter transform's temporaries come on top: a plan within that much of the
        # cap is made again under less, and under a tiny cap the smallest plan (one
        # tile of the shortest lengths) needs least.
        for room in (cap, self.tiling_cap, 1):
            plan = plan_fft(p, room)
            if workspace.forward_workspace_bytes(p, plan, cap) <= cap:
                break
        return plan

    def workspace_bytes(self, p: ConvProblem) -> int:
        if p.dir != "fwd":
            return workspace.backward_workspace_bytes(p, self.plan(p), self.workspace_cap)
        return workspace.forward_workspace_bytes(p, self.plan(p), self.workspace_cap)

    def error_model(self, p: ConvProblem) -> ErrorModel:
        plan = self.plan(p)
        return replace(super().error_model(p), transform_size=plan.lh * plan.lw)

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[..., np.ndarray]:
        plan = self.plan(p)
        if p.dir != "fwd":
            return prepare_backward(p, plan, x, w, self.workspace_cap)
        # The spectra first, in blocks of filters, before any buffer of the call exists.
        block = workspace.filter_block(p, plan, workspace.forward_budget(p, plan,
                                                                         self.workspace_cap))
        whole = whole_image_path(p, plan)
        spectra = filter_spectra(w, p, plan, p.dtype, shift=(p.ph, p.pw) if whole else (0, 0),
                                 workers=num_threads(), block=block)
        y = empty_output(p)
        b = bias_or_zeros(p, bias)
        forward_workers = fft_workers(plan.batch * p.ic * plan.lh * plan.lw)
        inverse_workers = fft_workers(plan.batch * p.oc * plan.lh * plan.lw)
        if whole:
            bias_planes = b[:, None, None]

            def whole_image_batch(x: np.ndarray, n0: int, nb: int) -> None:
                """Images ``n0:n0+nb``: their spectra and products die with the call."""
                spec = scipy.fft.rfft2(x[n0:n0 + nb], s=(plan.lh, plan.lw),
                                       workers=forward_workers)
                out = correlate_spectra(spec, spectra, p, plan, inverse_workers)
                with np.errstate(invalid="ignore", over="ignore"):
                    np.add(out[:, :, :p.oh * p.sh:p.sh, :p.ow * p.sw:p.sw], bias_planes,
                           out=y[n0:n0 + nb])

            def run_whole_images(x: np.ndarray = x) -> np.ndarray:
                for n0 in range(0, p.mb, plan.batch):
                    whole_image_batch(x, n0, min(plan.batch, p.mb - n0))
                return y

            return run_whole_images
        total = p.mb * plan.tiles
        step_h, step_w = plan.th * p.sh, plan.tw * p.sw
        tiles_buf = np.empty((plan.batch, p.ic, plan.lh, plan.lw), dtype=p.dtype)

        def tile_batch(x: np.ndarray, t0: int, nb: int) -> None:
            """Tiles ``t0:t0+nb``: their spectra and products die with the call."""
            tiles = tiles_buf[:nb]
            gather_tiles(x, tiles, t0, plan.tile_rows, plan.tile_cols, step_h, step_w,
                         p.ph, p.pw)
            spec = scipy.fft.rfft2(tiles, workers=forward_workers)
            out = correlate_spectra(spec, spectra, p, plan, inverse_workers)
            scatter_outputs(out, b, y, t0, plan.tile_rows, plan.tile_cols, plan.th,
                            plan.tw, p.sh, p.sw)

        def run(x: np.ndarray = x) -> np.ndarray:
            for t0 in range(0, total, plan.batch):
                tile_batch(x, t0, min(plan.batch, total - t0))
            return y

        return run


def contract_channels(spec: np.ndarray, spectra: np.ndarray, groups: int, freqs: int,
                      dtype: np.dtype) -> np.ndarray:
    """``(B, G*A, ...)`` spectra times ``(F, G, A, Z)`` per frequency and group: ``(B, G*Z, F)``.

    One batched complex GEMM over ``A`` (a broadcast product when ``A == 1``).
    """
    nb, a = spec.shape[0], spec.shape[1] // groups
    xt = np.ascontiguousarray(spec.reshape(nb, groups, a, freqs).transpose(3, 1, 0, 2))
    with np.errstate(invalid="ignore", over="ignore"):  # NaN inputs: NaN outputs, no noise
        yt = xt * spectra if a == 1 else np.matmul(xt, spectra)
    z = spectra.shape[3]
    return np.ascontiguousarray(yt.transpose(2, 1, 3, 0),
                                dtype=COMPLEX[np.dtype(dtype)]).reshape(nb, groups * z, freqs)


class _StuffedGradient:
    """``dy`` zero-stuffed onto the stride grid, a batch at a time, and its spectra.

    The buffer is zeroed once: each batch overwrites only the grid.
    """

    def __init__(self, p: ConvProblem, plan: FftPlan) -> None:
        self.p, self.plan = p, plan
        self.buf = np.zeros((plan.batch, p.oc, plan.lh, plan.lw), dtype=p.dtype)
        self.grid = (slice(None), slice(None), slice(0, p.oh * p.sh, p.sh),
                     slice(0, p.ow * p.sw, p.sw))
        self.workers = fft_workers(plan.batch * p.oc * plan.lh * plan.lw)

    def spectra(self, dy: np.ndarray, n0: int, nb: int) -> np.ndarray:
        """``rfft2`` of images ``n0:n0+nb`` of ``dy``, stuffed."""
        stuffed = self.buf[:nb]
        stuffed[self.grid] = dy[n0:n0 + nb]
        return scipy.fft.rfft2(stuffed, workers=self.workers)


def _batches(p: ConvProblem, plan: FftPlan) -> list[tuple[int, int]]:
    """(first image, images) of each batch."""
    return [(n0, min(plan.batch, p.mb - n0)) for n0 in range(0, p.mb, plan.batch)]


def prepare_backward(p: ConvProblem, plan: FftPlan, a: np.ndarray, b: np.ndarray,
                     cap: int) -> Callable[..., object]:
    """The backward call of ``p.dir``: ``call(dy)`` -> dx, ``call(x, dy)`` -> dw or (dw, db).

    ``(a, b)`` are ``(dy, w)`` for bwd_d and ``(x, dy)`` for bwd_w/bwd_wb, the
    order of ``torch.nn.grad``'s functions. What is kept is made before the
    buffers of a call, and each batch's arrays die with it
    (:mod:`kernels.cpu.fft_workspace` counts them).
    """
    if p.dir == "bwd_d":
        return _prepare_data(p, plan, a, b, cap)
    if plan.factored:
        return _prepare_factored_weights(p, plan, a, b)
    return _prepare_stored_weights(p, plan, a, b, cap)


def _prepare_data(p: ConvProblem, plan: FftPlan, dy: np.ndarray, w: np.ndarray,
                  cap: int) -> Callable[..., np.ndarray]:
    """bwd_d: ``dX = dY W`` per frequency (or per tap), inverse, cropped to the image."""
    lh, lw, half = plan.lh, plan.lw, plan.lw // 2 + 1
    if plan.factored:
        taps = algorithm.tap_spectra(p, plan, shift=(p.ph, p.pw)).astype(
            COMPLEX[np.dtype(p.dtype)])
        weights = factored_weights(w, p)

        def contract(ys: np.ndarray) -> np.ndarray:
            return factored_data_spectra(ys, weights, taps, p)
    else:
        block = workspace.filter_block(p, plan, workspace.backward_budget(p, plan, cap))
        spectra = algorithm.adjoint_filter_spectra(w, p, plan, p.dtype,
                                                   workers=num_threads(), block=block)

        def contract(ys: np.ndarray) -> np.ndarray:
            return contract_channels(ys, spectra, p.g, plan.freqs, p.dtype)
    stuffed = _StuffedGradient(p, plan)
    c_workers = fft_workers(plan.batch * p.ic * lh * lw)
    dx = aligned_empty(p.input_shape, p.dtype)
    batches = _batches(p, plan)

    def data_batch(dy: np.ndarray, n0: int, nb: int) -> None:
        spec = contract(stuffed.spectra(dy, n0, nb))
        out = scipy.fft.irfft2(spec.reshape(nb, p.ic, lh, half), s=(lh, lw), workers=c_workers)
        dx[n0:n0 + nb] = out[:, :, :p.ih, :p.iw]

    def run_data(dy: np.ndarray = dy) -> np.ndarray:
        for n0, nb in batches:
            data_batch(dy, n0, nb)
        return dx

    return run_data


def _prepare_factored_weights(p: ConvProblem, plan: FftPlan, x: np.ndarray,
                              dy: np.ndarray) -> Callable[..., object]:
    """Tap-factored bwd_w: one real GEMM per tap over a batch's images and frequencies."""
    lh, lw = plan.lh, plan.lw
    inverse = np.conj(algorithm.tap_spectra(p, plan, shift=(p.ph, p.pw), inverse=True))
    total64 = np.empty(p.weight_shape, dtype=np.float64)
    stuffed = _StuffedGradient(p, plan)
    c_workers = fft_workers(plan.batch * p.ic * lh * lw)
    dw = aligned_empty(p.weight_shape, p.dtype)
    db = aligned_empty((p.oc,), p.dtype) if p.dir == "bwd_wb" else None
    batches = _batches(p, plan)

    def weights_batch(x: np.ndarray, dy: np.ndarray, n0: int, nb: int) -> None:
        xs = scipy.fft.rfft2(x[n0:n0 + nb], s=(lh, lw), workers=c_workers)
        factored_weight_gradient(xs, stuffed.spectra(dy, n0, nb), inverse, p, total64)

    def run_factored_weights(x: np.ndarray = x, dy: np.ndarray = dy) -> object:
        total64[...] = 0
        for n0, nb in batches:
            weights_batch(x, dy, n0, nb)
        dw[...] = total64
        return weight_gradients(dy, dw, db)

    return run_factored_weights


def _prepare_stored_weights(p: ConvProblem, plan: FftPlan, x: np.ndarray, dy: np.ndarray,
                            cap: int) -> Callable[..., object]:
    """bwd_w: ``sum_n X conj(dY)`` per frequency over the batches, inverse, read at the taps.

    The batches after the first add their product into the total a chunk of
    frequencies at a time, and the inverse runs over blocks of filters: the
    same values, with temporaries a share of the total's size.
    """
    lh, lw, half = plan.lh, plan.lw, plan.lw // 2 + 1
    g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
    rows, cols = algorithm.tap_positions(p, plan)
    total = np.empty((plan.freqs, g, cg, kg), dtype=COMPLEX[np.dtype(p.dtype)])
    step = -(-plan.freqs // workspace.SUM_CHUNKS)
    chunks = [slice(f0, min(plan.freqs, f0 + step)) for f0 in range(0, plan.freqs, step)]
    final = workspace.final_block(p, plan, workspace.backward_budget(p, plan, cap))
    stuffed = _StuffedGradient(p, plan)
    c_workers = fft_workers(plan.batch * p.ic * lh * lw)
    dw = aligned_empty(p.weight_shape, p.dtype)
    db = aligned_empty((p.oc,), p.dtype) if p.dir == "bwd_wb" else None
    batches = _batches(p, plan)

    def weights_batch(x: np.ndarray, dy: np.ndarray, n0: int, nb: int, first: bool) -> None:
        xs = scipy.fft.rfft2(x[n0:n0 + nb], s=(lh, lw), workers=c_workers)
        ys = stuffed.spectra(dy, n0, nb)
        # (F, G, C/g, nb) @ conj (F, G, nb, K/g): the sum over images is the GEMM's
        xt = xs.reshape(nb, g, cg, plan.freqs).transpose(3, 1, 2, 0)
        yt = np.conj(ys.reshape(nb, g, kg, plan.freqs).transpose(3, 1, 0, 2))
        del ys
        with np.errstate(invalid="ignore", over="ignore"):
            if first:
                np.matmul(xt, yt, out=total)
                return
            for f in chunks:
                np.add(total[f], np.matmul(xt[f], yt[f]), out=total[f])

    def inverse_block(gi: int, lo: int, hi: int) -> None:
        """``dw[lo:hi]`` (filters of group ``gi``) from the total's inverse at the taps."""
        spec = np.ascontiguousarray(total[:, gi, :, lo - gi * kg:hi - gi * kg]
                                    .transpose(2, 1, 0)).reshape(hi - lo, cg, lh, half)
        full = scipy.fft.irfft2(spec, s=(lh, lw), workers=fft_workers(spec.size * 2))
        dw[lo:hi] = full[:, :, rows[:, None], cols[None, :]]

    def inverse_at_taps() -> None:
        """``dw`` from the total's inverse, a block of filters at a time."""
        for k0, k1 in algorithm.filter_blocks(p.oc, final):
            for span in algorithm.group_spans(k0, k1, kg):
                inverse_block(*span)

    def run_weights(x: np.ndarray = x, dy: np.ndarray = dy) -> object:
        if not batches:  # no images: nothing is summed
            total[...] = 0
        for i, (n0, nb) in enumerate(batches):
            weights_batch(x, dy, n0, nb, i == 0)
        inverse_at_taps()
        return weight_gradients(dy, dw, db)

    return run_weights


def factored_weights(w: np.ndarray, p: ConvProblem) -> np.ndarray:
    """``w`` as ``(R*S, G, C/g, K/g)``: per tap and group, the matrix that maps dC to dX."""
    kg, cg = p.oc // p.g, p.ic // p.g
    taps = w.reshape(p.g, kg, cg, p.kh * p.kw).transpose(3, 0, 2, 1)
    return np.ascontiguousarray(taps, dtype=p.dtype)


def factored_data_spectra(ys: np.ndarray, weights: np.ndarray, taps: np.ndarray,
                          p: ConvProblem) -> np.ndarray:
    """``dX[n, c, f] = sum_rs E[f, rs] sum_k w[k, c, rs] dC[n, k, f]``, as ``(B, C, F)``.

    The sum over K is a real GEMM on the interleaved real and imaginary parts
    of ``dC``; ``taps`` is ``E`` in the spectra's complex dtype.
    """
    nb, g = ys.shape[0], p.g
    kg = p.oc // g
    planes = ys.reshape(nb, g, kg, -1).view(ys.real.dtype)      # (B, G, K/g, 2F)
    out = None
    with np.errstate(invalid="ignore", over="ignore"):
        for rs in range(taps.shape[1]):
            mixed = np.matmul(weights[rs], planes).view(ys.dtype)  # (B, G, C/g, F)
            mixed *= taps[:, rs]
            out = mixed if out is None else np.add(out, mixed, out=out)
            del mixed  # before the next tap's: one product beside the sum
    return out.reshape(nb, p.ic, -1)


def factored_weight_gradient(xs: np.ndarray, ys: np.ndarray, inverse: np.ndarray,
                             p: ConvProblem, dw: np.ndarray) -> None:
    """Add ``Re sum_{n, f} X[n, c, f] conj(dC[n, k, f]) B[f, rs]`` of one batch to ``dw``.

    ``dw`` is a float64 ``(K, C/g, R, S)`` sum over the batches.

    ``inverse`` is ``conj(B)``. With ``V = dC conj(B)``, ``Re(X conj(V))`` is the
    dot product of the interleaved real and imaginary parts: one real GEMM per
    tap and group over the batch's images and frequencies.

    The GEMM runs in float64. It reads ``irfft2`` at one point as a plain sum
    over ``2 * B * F`` terms that cancel down to ``dw``, whose rounding in
    float32 grows with that length where an inverse FFT's grows with its
    logarithm (float32 sums measured up to 2.7x the FFT's error envelope); in
    float64 only the spectra's own rounding remains, as in the stored path.
    """
    nb, g = xs.shape[0], p.g
    kg, cg = p.oc // g, p.ic // g
    x_planes = xs.astype(np.complex128).reshape(nb, g, cg, -1).view(np.float64)  # (B, G, C/g, 2F)
    grads = dw.reshape(g, kg, cg, p.kh * p.kw)
    with np.errstate(invalid="ignore", over="ignore"):
        for rs in range(inverse.shape[1]):
            v = (ys.reshape(nb, p.oc, -1) * inverse[:, rs]).reshape(nb, g, kg, -1).view(
                np.float64)
            for gi in range(g):
                grads[gi, :, :, rs] += np.tensordot(v[:, gi], x_planes[:, gi],
                                                    axes=([0, 2], [0, 2]))
            del v  # before the next tap's: one product at a time


def weight_gradients(dy: np.ndarray, dw: np.ndarray, db: np.ndarray | None) -> object:
    """``dw``, or ``(dw, db)`` with the bias gradient computed into ``db`` (bwd_wb)."""
    if db is None:
        return dw
    bias_gradient(dy, db)
    return dw, db


def bias_gradient(dy: np.ndarray, db: np.ndarray) -> None:
    """``db[k] = sum over n, p, q of dy[n, k, p, q]``, summed in float64 and rounded once."""
    n, k = dy.shape[0], dy.shape[1]
    db[...] = dy.reshape(n, k, dy.shape[2] * dy.shape[3]).sum(axis=2, dtype=np.float64).sum(axis=0)


KERNELS = [FftKernel()]
