"""FFT convolution: real FFTs of input tiles and filters, per-frequency channel
contraction as a batched complex GEMM, inverse real FFT (overlap-save).

The output is cut into tiles of ``t_h x t_w`` outputs; each reads an input
tile of ``L_h x L_w`` (the FFT size) from the virtually zero-padded input.
Circular cross-correlation of a tile with the (dilated) filter is exact on
the outputs kept, because ``(t-1)*stride + R_eff <= L``: nothing wraps round.
Strided problems compute the stride-1 correlation and keep every
``stride``-th value (subsampling); dilation uses a zero-stuffed filter.

Per layer the FFT size is chosen from 5-smooth lengths (fast in pocketfft)
by a cost model of FFT and GEMM arithmetic, under the workspace cap; small
images get one tile, large ones many, which also batches the GEMM better.

When one tile covers a whole image (small images: the 5x5 layers of GoogLeNet,
AlexNet conv2) and ``L >= H + pad`` on both axes, there is nothing to
gather: ``rfft2(x, s=(L_h, L_w))`` zero-pads at the end, and the leading
padding moves into the filter, placed circularly at ``-pad``. The circular
correlation then yields output ``p`` at index ``p * stride`` (the window of
output 0 starts ``pad`` rows "before" row 0, i.e. at ``L - pad``, where the
zeros of the padding are), so the output is a strided crop plus bias.

Spectra (``F = L_h * (L_w//2 + 1)`` frequencies)::

    X[f, g, b, c]  = rfft2(tile_b)[g*C/g + c, f]
    W*[f, g, c, k] = conj(rfft2(w_dilated))[g*K/g + k, c, f]   (once, in prepare)
    Y[f, g, b, k]  = sum_c X[f, g, b, c] W*[f, g, c, k]          (one matmul)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numba import njit, prange

from convbench.problem import ConvProblem, effective_extent
from kernels.cpu.common import WORKSPACE_CAP_BYTES, cpu_dtype_reason, empty_output, num_threads

_COMPLEX = {"float32": np.complex64, "float64": np.complex128}


def smooth_lengths(lo: int, hi: int) -> list[int]:
    """5-smooth integers (2^a 3^b 5^c) in ``[lo, hi]``: pocketfft's fast sizes."""
    out = []
    p2 = 1
    while p2 <= hi:
        p3 = p2
        while p3 <= hi:
            p5 = p3
            while p5 <= hi:
                if p5 >= lo:
                    out.append(p5)
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return sorted(out)


def outputs_per_tile(length: int, k_eff: int, stride: int) -> int:
    """Outputs one FFT tile of ``length`` yields: ``(L - R_eff)//stride + 1``."""
    return (length - k_eff) // stride + 1


@dataclass(frozen=True)
class FftPlan:
    """FFT sizes and tiling chosen for one problem."""

    lh: int
    lw: int
    th: int  # outputs per tile, vertically
    tw: int
    tile_rows: int
    tile_cols: int
    batch: int  # tiles transformed together (bounded by the workspace cap)

    @property
    def freqs(self) -> int:
        return self.lh * (self.lw // 2 + 1)

    @property
    def tiles(self) -> int:
        return self.tile_rows * self.tile_cols


def _candidates(k_eff: int, stride: int, out: int) -> list[tuple[int, int, int]]:
    """(L, outputs per tile, tiles) for every useful FFT length along one axis."""
    one_tile = (out - 1) * stride + k_eff
    hi = scipy.fft.next_fast_len(one_tile, real=True)
    result = []
    for length in smooth_lengths(k_eff, hi):
        per_tile = min(out, outputs_per_tile(length, k_eff, stride))
        result.append((length, per_tile, -(-out // per_tile)))
    return result


def plan_fft(p: ConvProblem, cap: int) -> FftPlan:
    """Choose FFT sizes minimizing modelled arithmetic under the workspace cap.

    Model per tile: real 2-D FFTs of C inputs and K outputs at
    ``2.5 L log2 L`` flops each, the complex contraction at 8 flops per
    multiply-add, and the spectrum transposes as memory traffic.
    """
    kh_eff = effective_extent(p.kh, p.dil_h)
    kw_eff = effective_extent(p.kw, p.dil_w)
    cg, kg = p.ic // p.g, p.oc // p.g
    isz = p.itemsize
    best = None
    for lh, th, nth in _candidates(kh_eff, p.sh, p.oh):
        for lw, tw, ntw in _candidates(kw_eff, p.sw, p.ow):
            area, freqs = lh * lw, lh * (lw // 2 + 1)
            filter_bytes = p.oc * cg * freqs * 2 * isz
            per_tile = (p.ic + p.oc) * (area + 4 * freqs) * isz
            if filter_bytes + per_tile > cap:
                continue
            tiles = max(1, p.mb) * nth * ntw
            cost = tiles * ((p.ic + p.oc) * 2.5 * area * math.log2(max(area, 2))
                            + freqs * p.g * cg * kg * 8 + (p.ic + p.oc) * freqs * 4)
            if best is None or cost < best[0]:
                batch = max(1, min(tiles, (cap - filter_bytes) // per_tile))
                best = (cost, FftPlan(lh, lw, th, tw, nth, ntw, batch))
    if best is None:  # even the smallest tile exceeds the cap: take it anyway, one at a time
        lh, th, nth = _candidates(kh_eff, p.sh, p.oh)[0]
        lw, tw, ntw = _candidates(kw_eff, p.sw, p.ow)[0]
        return FftPlan(lh, lw, th, tw, nth, ntw, 1)
    return best[1]


@njit(cache=True, inline="always")
def tile_position(t, tile_rows, tile_cols):
    """Image, tile row and tile column of flat tile index ``t``."""
    return t // (tile_rows * tile_cols), (t // tile_cols) % tile_rows, t % tile_cols


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


def filter_spectra(w: np.ndarray, p: ConvProblem, plan: FftPlan,
                   shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``conj(rfft2(dilated w))`` as ``(F, G, C/g, K/g)``, computed in float64.

    ``shift`` places filter tap ``(0, 0)`` at ``(-shift) mod L`` (circularly),
    which is how :func:`whole_image_path` absorbs the input's leading padding.
    """
    kg, cg = p.oc // p.g, p.ic // p.g
    dilated = np.zeros((p.oc, cg, plan.lh, plan.lw), dtype=np.float64)
    kh_eff, kw_eff = effective_extent(p.kh, p.dil_h), effective_extent(p.kw, p.dil_w)
    dilated[:, :, :kh_eff:p.dil_h, :kw_eff:p.dil_w] = w
    if shift != (0, 0):
        dilated = np.roll(dilated, (-shift[0], -shift[1]), axis=(2, 3))
    spec = np.conj(scipy.fft.rfft2(dilated, workers=num_threads()))
    spec = spec.reshape(p.g, kg, cg, plan.freqs).transpose(3, 0, 2, 1)
    return np.ascontiguousarray(spec, dtype=_COMPLEX[p.dtype])


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
    ys = np.ascontiguousarray(yt.transpose(2, 1, 3, 0), dtype=_COMPLEX[p.dtype])
    return scipy.fft.irfft2(ys.reshape(nb, p.oc, plan.lh, plan.lw // 2 + 1),
                            s=(plan.lh, plan.lw), workers=workers)


def whole_image_path(p: ConvProblem, plan: FftPlan) -> bool:
    """Whether ``plan`` can transform whole images, with no tile gather.

    One tile must cover the image, and the circular wrap of the leading
    padding must land on zeros: rows ``L - pad .. L-1`` lie past the image
    (``L >= H + pad``; rows of the image past ``L`` are never read).
    """
    return (plan.tiles == 1 and plan.lh >= p.ih + p.ph and plan.lw >= p.iw + p.pw)


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


class FftKernel:
    """FFT (overlap-save) convolution; every parameter combination.

    Parameters
    ----------
    workspace_cap : int
        Upper bound on filter spectra plus one batch of tile spectra.
    """

    name = "fft"
    backend = "cpu"
    kind = "kernel"
    #: ``prepare`` computes the filter spectra once per weight tensor.
    pretransforms_weights = True

    def __init__(self, workspace_cap: int = WORKSPACE_CAP_BYTES) -> None:
        self.workspace_cap = workspace_cap

    def supports(self, p: ConvProblem) -> str | None:
        return cpu_dtype_reason(p)

    def plan(self, p: ConvProblem) -> FftPlan:
        return plan_fft(p, self.workspace_cap)

    def workspace_bytes(self, p: ConvProblem) -> int:
        plan = self.plan(p)
        filter_bytes = p.oc * (p.ic // p.g) * plan.freqs * 2 * p.itemsize
        per_tile = (p.ic + p.oc) * (plan.lh * plan.lw + 4 * plan.freqs) * p.itemsize
        return filter_bytes + plan.batch * per_tile

    def prepare(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                bias: np.ndarray | None) -> Callable[[], np.ndarray]:
        plan = self.plan(p)
        y = empty_output(p)
        b = bias if bias is not None else np.zeros(p.oc, dtype=p.dtype)
        if whole_image_path(p, plan):
            return self._prepare_whole_images(p, plan, x, w, b, y)
        spectra = filter_spectra(w, p, plan)
        total = p.mb * plan.tiles
        step_h, step_w = plan.th * p.sh, plan.tw * p.sw
        forward_workers = fft_workers(plan.batch * p.ic * plan.lh * plan.lw)
        inverse_workers = fft_workers(plan.batch * p.oc * plan.lh * plan.lw)
        tiles_buf = np.empty((plan.batch, p.ic, plan.lh, plan.lw), dtype=p.dtype)

        def run() -> np.ndarray:
            for t0 in range(0, total, plan.batch):
                nb = min(plan.batch, total - t0)
                tiles = tiles_buf[:nb]
                gather_tiles(x, tiles, t0, plan.tile_rows, plan.tile_cols, step_h, step_w,
                             p.ph, p.pw)
                spec = scipy.fft.rfft2(tiles, workers=forward_workers)
                out = correlate_spectra(spec, spectra, p, plan, inverse_workers)
                scatter_outputs(out, b, y, t0, plan.tile_rows, plan.tile_cols, plan.th,
                                plan.tw, p.sh, p.sw)
            return y

        return run

    @staticmethod
    def _prepare_whole_images(p: ConvProblem, plan: FftPlan, x: np.ndarray, w: np.ndarray,
                              b: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
        """The no-gather path (:func:`whole_image_path`): images in batches of ``plan.batch``."""
        spectra = filter_spectra(w, p, plan, shift=(p.ph, p.pw))
        forward_workers = fft_workers(plan.batch * p.ic * plan.lh * plan.lw)
        inverse_workers = fft_workers(plan.batch * p.oc * plan.lh * plan.lw)
        bias = b[:, None, None]

        def run() -> np.ndarray:
            for n0 in range(0, p.mb, plan.batch):
                nb = min(plan.batch, p.mb - n0)
                spec = scipy.fft.rfft2(x[n0:n0 + nb], s=(plan.lh, plan.lw),
                                       workers=forward_workers)
                out = correlate_spectra(spec, spectra, p, plan, inverse_workers)
                with np.errstate(invalid="ignore", over="ignore"):
                    np.add(out[:, :, :p.oh * p.sh:p.sh, :p.ow * p.sw:p.sw], bias,
                           out=y[n0:n0 + nb])
            return y

        return run


KERNEL = FftKernel()
KERNELS = [KERNEL]
