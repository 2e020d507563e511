"""FFT convolution by overlap-save: real FFTs of input tiles and filters, a per-frequency
channel contraction, an inverse real FFT.

The output is cut into tiles of ``t_h x t_w`` outputs; each reads an input
tile of ``L_h x L_w`` (the FFT size) from the virtually zero-padded input.
Circular cross-correlation of a tile with the (dilated) filter is exact on
the outputs kept, because ``(t-1)*stride + R_eff <= L``: nothing wraps round.
Strided problems compute the stride-1 correlation and keep every
``stride``-th value (subsampling); dilation uses a zero-stuffed filter.

Spectra (``F = L_h * (L_w//2 + 1)`` frequencies)::

    X[f, g, b, c]  = rfft2(tile_b)[g*C/g + c, f]
    W*[f, g, c, k] = conj(rfft2(w_dilated))[g*K/g + k, c, f]   (once per weight tensor)
    Y[f, g, b, k]  = sum_c X[f, g, b, c] W*[f, g, c, k]          (one batched GEMM)

Per layer the FFT size is chosen from 5-smooth lengths (fast in pocketfft
and cuFFT) by a cost model of FFT and GEMM arithmetic, under a workspace cap.

When one tile covers a whole image and ``L >= H + pad`` on both axes, there
is nothing to gather: ``rfft2(x, s=(L_h, L_w))`` zero-pads at the end, and the
leading padding moves into the filter, placed circularly at ``-pad``. Output
``p`` is then at index ``p * stride`` of the circular correlation (the window
of output 0 starts ``pad`` rows "before" row 0, i.e. at ``L - pad``, where the
zeros of the padding are), so the output is a strided crop plus bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from convbench.problem import ConvProblem, effective_extent

#: Complex dtype of the spectra per real work dtype.
COMPLEX = {np.dtype(np.float32): np.dtype(np.complex64),
           np.dtype(np.float64): np.dtype(np.complex128)}


def smooth_lengths(lo: int, hi: int) -> list[int]:
    """5-smooth integers (2^a 3^b 5^c) in ``[lo, hi]``: the FFT libraries' fast sizes."""
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
    factored: bool = False  # a tap-factored backward pass (see tap_factored)

    @property
    def freqs(self) -> int:
        return self.lh * (self.lw // 2 + 1)

    @property
    def tiles(self) -> int:
        return self.tile_rows * self.tile_cols


def _candidates(k_eff: int, stride: int, out: int,
                min_length: int = 1) -> list[tuple[int, int, int]]:
    """(L, outputs per tile, tiles) for every useful FFT length along one axis."""
    one_tile = max((out - 1) * stride + k_eff, min_length)
    hi = scipy.fft.next_fast_len(one_tile, real=True)
    result = []
    for length in smooth_lengths(max(k_eff, min_length), hi):
        per_tile = min(out, outputs_per_tile(length, k_eff, stride))
        result.append((length, per_tile, -(-out // per_tile)))
    return result


def filter_bytes(p: ConvProblem, lh: int, lw: int, itemsize: int) -> int:
    """Bytes of the filter spectra: ``K * C/g * F`` complex values."""
    return p.oc * (p.ic // p.g) * lh * (lw // 2 + 1) * 2 * itemsize


def tile_bytes(p: ConvProblem, lh: int, lw: int, itemsize: int) -> int:
    """Workspace of one tile: its C inputs and K outputs in space and as spectra (x2 for copies)."""
    return (p.ic + p.oc) * (lh * lw + 4 * lh * (lw // 2 + 1)) * itemsize


def workspace_bytes(p: ConvProblem, plan: FftPlan, itemsize: int | None = None) -> int:
    """Filter spectra plus one batch of tiles."""
    isz = itemsize or p.itemsize
    return filter_bytes(p, plan.lh, plan.lw, isz) + plan.batch * tile_bytes(p, plan.lh, plan.lw,
                                                                            isz)


def plan_fft(p: ConvProblem, cap: int, itemsize: int | None = None,
             min_length: int = 1) -> FftPlan:
    """Choose FFT sizes minimizing modelled arithmetic under the workspace cap.

    Model per tile: real 2-D FFTs of C inputs and K outputs at
    ``2.5 L log2 L`` flops each, the complex contraction at 8 flops per
    multiply-add, and the spectrum transposes as memory traffic. ``itemsize``
    is that of the real work dtype (default: the problem's). ``min_length``
    bounds the FFT lengths from below (a 1x1 filter would otherwise allow
    length-1 "transforms", one per output, which no FFT library plans well).
    """
    kh_eff = effective_extent(p.kh, p.dil_h)
    kw_eff = effective_extent(p.kw, p.dil_w)
    cg, kg = p.ic // p.g, p.oc // p.g
    isz = itemsize or p.itemsize
    best = None
    for lh, th, nth in _candidates(kh_eff, p.sh, p.oh, min_length):
        for lw, tw, ntw in _candidates(kw_eff, p.sw, p.ow, min_length):
            area, freqs = lh * lw, lh * (lw // 2 + 1)
            spectra = filter_bytes(p, lh, lw, isz)
            per_tile = tile_bytes(p, lh, lw, isz)
            if spectra + per_tile > cap:
                continue
            tiles = max(1, p.mb) * nth * ntw
            cost = tiles * ((p.ic + p.oc) * 2.5 * area * math.log2(max(area, 2))
                            + freqs * p.g * cg * kg * 8 + (p.ic + p.oc) * freqs * 4)
            if best is None or cost < best[0]:
                batch = max(1, min(tiles, (cap - spectra) // per_tile))
                best = (cost, FftPlan(lh, lw, th, tw, nth, ntw, batch))
    if best is None:
        # Even the smallest tile is over the cap: its plan, one tile at a time, whose
        # workspace_bytes the caller compares with the cap (the CPU kernel refuses it).
        lh, th, nth = _candidates(kh_eff, p.sh, p.oh, min_length)[0]
        lw, tw, ntw = _candidates(kw_eff, p.sw, p.ow, min_length)[0]
        return FftPlan(lh, lw, th, tw, nth, ntw, 1)
    return best[1]


def whole_image_path(p: ConvProblem, plan: FftPlan) -> bool:
    """Whether ``plan`` can transform whole images, with no tile gather.

    One tile must cover the image, and the circular wrap of the leading
    padding must land on zeros: rows ``L - pad .. L-1`` lie past the image
    (``L >= H + pad``; rows of the image past ``L`` are never read).
    """
    return plan.tiles == 1 and plan.lh >= p.ih + p.ph and plan.lw >= p.iw + p.pw


def tap_spectra(p: ConvProblem, plan: FftPlan, shift: tuple[int, int] = (0, 0),
                inverse: bool = False) -> np.ndarray:
    """The rfft2 of a unit impulse at each filter tap, ``(F, R*S)`` complex128.

    Tap ``(r, s)`` sits at ``(r*d_h - shift_h) mod L_h, (s*d_w - shift_w) mod L_w``;
    its spectrum is ``E[(u, v), (r, s)] = exp(-2 pi i (u row_r / L_h + v col_s / L_w))``.

    With ``inverse``, the weights that read ``irfft2`` at each tap's position
    instead: ``irfft2(Z)[row_r, col_s] = Re sum_f Z[f] B[f, (r, s)]``, where
    ``B = c_v conj(E) / (L_h L_w)`` and ``c_v`` is 1 on the columns that the
    half spectrum holds once (``v = 0`` and, for even ``L_w``, ``v = L_w/2``) and
    2 on the others, whose mirror images it leaves out.
    """
    lh, lw, half = plan.lh, plan.lw, plan.lw // 2 + 1
    rows = (np.arange(p.kh) * p.dil_h - shift[0]) % lh
    cols = (np.arange(p.kw) * p.dil_w - shift[1]) % lw
    # The phase in units of 1/(L_h L_w) turns, an exact integer reduced to
    # [-L_h L_w / 2, L_h L_w / 2): one cos and one sin of an angle of at most pi
    # per entry, as accurate as an FFT's twiddles.
    u = np.arange(lh)[:, None, None, None]
    v = np.arange(half)[None, :, None, None]
    turns = (u * rows[None, None, :, None] * lw + v * cols[None, None, None, :] * lh) % (lh * lw)
    turns = np.where(2 * turns >= lh * lw, turns - lh * lw, turns)
    angle = (2.0 * np.pi / (lh * lw)) * turns
    sign = 1.0 if inverse else -1.0
    spectra = np.cos(angle) + 1j * (sign * np.sin(angle))
    if inverse:
        weight = np.full(half, 2.0)
        weight[0] = 1.0
        if lw % 2 == 0:
            weight[-1] = 1.0
        spectra *= weight[None, :, None, None] / (lh * lw)
    return spectra.reshape(plan.freqs, -1)


def _conj_filter_spectra(w: np.ndarray, p: ConvProblem, plan: FftPlan,
                         shift: tuple[int, int], workers: int, scale: float) -> np.ndarray:
    """``scale * conj(rfft2(dilated w))`` of some filters ``w`` (k, C/g, R, S): (k, C/g, F)
    complex128. Each filter's spectra are computed alone, so blocks of filters give the
    values all of them at once would."""
    dilated = np.zeros((w.shape[0], w.shape[1], plan.lh, plan.lw), dtype=np.float64)
    kh_eff, kw_eff = effective_extent(p.kh, p.dil_h), effective_extent(p.kw, p.dil_w)
    dilated[:, :, :kh_eff:p.dil_h, :kw_eff:p.dil_w] = w
    if shift != (0, 0):
        dilated = np.roll(dilated, (-shift[0], -shift[1]), axis=(2, 3))
    spec = np.conj(scipy.fft.rfft2(dilated, workers=workers))
    if scale != 1.0:
        spec *= scale
    return spec.reshape(w.shape[0], w.shape[1], plan.freqs)


def filter_transform_bytes(p: ConvProblem, plan: FftPlan, filters: int) -> int:
    """Bytes :func:`filter_spectra` holds besides its result for a block of ``filters``.

    The float64 zero-stuffed filters and their rolled copy (8 bytes a value each),
    their complex128 spectra and the conjugate (16 bytes each).
    """
    return filters * (p.ic // p.g) * (16 * plan.lh * plan.lw + 32 * plan.freqs)


def filter_blocks(count: int, block: int | None) -> list[tuple[int, int]]:
    """``[k0, k1)`` ranges of at most ``block`` of ``count`` filters (one range for None)."""
    step = count if block is None else max(1, block)
    return [(k0, min(count, k0 + step)) for k0 in range(0, count, max(1, step))]


def filter_spectra(w: np.ndarray, p: ConvProblem, plan: FftPlan, dtype: np.dtype,
                   shift: tuple[int, int] = (0, 0), workers: int = 1,
                   scale: float = 1.0, block: int | None = None) -> np.ndarray:
    """``scale * conj(rfft2(dilated w))`` as ``(F, G, C/g, K/g)``: in float64, rounded once.

    Parameters
    ----------
    w : ndarray, shape (K, C/g, R, S)
        Host weights.
    dtype : numpy dtype
        Real work dtype; the result is its complex counterpart.
    shift : (int, int)
        Places filter tap ``(0, 0)`` at ``(-shift) mod L`` (circularly): how
        the whole-image path absorbs the input's leading padding.
    workers : int
        pocketfft threads.
    scale : float
        Factor folded into the spectra (``1/(L_h L_w)`` lets the inverse FFT
        skip its normalization pass).
    block : int, optional
        Filters transformed at once (default: all): the float64 temporaries
        of :func:`filter_transform_bytes` are a block's, the values the same.
    """
    kg, cg = p.oc // p.g, p.ic // p.g
    out = np.empty((plan.freqs, p.g, cg, kg), dtype=COMPLEX[np.dtype(dtype)])
    for k0, k1 in filter_blocks(p.oc, block):
        spec = _conj_filter_spectra(w[k0:k1], p, plan, shift, workers, scale)
        for gi, lo, hi in group_spans(k0, k1, kg):  # out[f, g, c, k] = spec[k, c, f]
            out[:, gi, :, lo - gi * kg:hi - gi * kg] = spec[lo - k0:hi - k0].transpose(2, 1, 0)
    return out


def group_spans(k0: int, k1: int, kg: int) -> list[tuple[int, int, int]]:
    """(group, first, end) of the filters ``[k0, k1)`` in each group of ``kg`` they cover."""
    return [(gi, max(k0, gi * kg), min(k1, (gi + 1) * kg))
            for gi in range(k0 // kg, -(-k1 // kg))]


def tile_position(t: int, tile_rows: int, tile_cols: int) -> tuple[int, int, int]:
    """Image, tile row and tile column of flat tile index ``t`` (image-major, then row)."""
    return t // (tile_rows * tile_cols), (t // tile_cols) % tile_rows, t % tile_cols


# ------------------------------------------------------------------ backward passes
# The forward pass is c = x (*) w_f, circular cross-correlation of the image with
# the filter w_f placed at (r*d - pad) mod L, kept at t = p*stride:
#
#     c[t] = sum_i x[i] w_f[(i - t) mod L],   y[p] = c[p * stride].
#
# Its adjoints, with dc the output gradient zero-stuffed onto t = p*stride (the
# adjoint of keeping every stride-th value):
#
#     dx[i]   = sum_t dc[t] w_f[(i - t) mod L]   = irfft2(rfft2(dc) * rfft2(w_f))[i]
#     dw_f[j] = sum_t dc[t] x[(t + j) mod L]     = irfft2(sum_n X * conj(rfft2(dc)))[j]
#
# so backward data multiplies by the filter spectra *unconjugated* (the forward
# correlates, its adjoint convolves) and crops to the image; backward weights sums
# X conj(dY) over the batch per frequency (one GEMM over N) and reads dw at the
# taps' positions. Both hold exactly when no pair (i, t) aliases modulo L:
# L >= H + max(pad_top, pad_bottom), L >= R_eff (distinct tap positions) and
# L > (P-1)*stride (the stuffed gradient fits).
#
# Tap-factored passes. The filter spectrum is a sum over its taps,
# W(f) = sum_rs w[rs] E[f, rs] with E the spectrum of an impulse at the tap (see
# tap_spectra), so
#
#     dX[n, c, f]  = sum_rs E[f, rs] sum_k w[k, c, rs] dC[n, k, f]
#     dw[k, c, rs] = Re sum_{n, f} X[n, c, f] conj(dC[n, k, f]) B[f, rs]
#
# with B the weights that read irfft2 at the tap's position. The first is one
# real GEMM over K per tap and keeps no spectra; the second one real GEMM over
# images and frequencies per tap, and no inverse FFT. For a 1x1 filter on a
# large image these replace K*C/g*F stored spectra (1.9 GB for ResNet-50's
# res3a_branch1 at batch 8, float32) and K*C/g inverse FFTs of which one value
# each is read.


def backward_length(size: int, pad_lo: int, pad_hi: int, k_eff: int, out: int, stride: int,
                    min_length: int = 1) -> int:
    """The whole-image FFT length of a backward pass along one axis (see above)."""
    need = max(size + max(pad_lo, pad_hi, 0), k_eff, (out - 1) * stride + 1, min_length)
    return scipy.fft.next_fast_len(need, real=True)


#: Per backward direction, filters of at most this many taps take the tap-factored pass.
FACTORED_MAX_TAPS = {"bwd_d": 1, "bwd_w": 9, "bwd_wb": 9}


def tap_factored(p: ConvProblem) -> bool:
    """Whether ``p``'s backward pass is tap-factored (see the comment above).

    bwd_d: only 1x1 filters. The factored pass does a real GEMM over K per tap
    where the stored spectra do one complex GEMM in all, so from two taps on
    it does more arithmetic; for one tap it saves the ``K * C/g * F`` spectra.
    bwd_w: up to 3x3. Its factored GEMMs run over every image and frequency at
    once, where the stored path does one small GEMM over the images per
    frequency and then ``K * C/g`` inverse FFTs; with many taps and few
    channels (a 7x7 filter on 3 channels) the per-tap products dominate.
    """
    return p.kh * p.kw <= FACTORED_MAX_TAPS.get(p.dir, 0)


def backward_filter_bytes(p: ConvProblem, lh: int, lw: int, itemsize: int,
                          factored: bool = False) -> int:
    """Filter spectra (bwd_d) or the summed filter-gradient spectra and their inverse (bwd_w).

    Tap-factored passes keep neither: only the filter (gradient) itself.
    """
    if factored:
        return p.oc * (p.ic // p.g) * p.kh * p.kw * itemsize
    spectra = filter_bytes(p, lh, lw, itemsize)
    if p.dir == "bwd_d":
        return spectra
    return spectra + p.oc * (p.ic // p.g) * lh * lw * itemsize


def plan_fft_backward(p: ConvProblem, cap: int, itemsize: int | None = None,
                      min_length: int = 1, factored: bool = False) -> FftPlan:
    """Whole-image FFT sizes of ``p``'s backward pass; images per batch under the cap.

    One tile covers each image (overlap-save has no cheap adjoint: the
    gradient of an input pixel gathers from several tiles), so the batch is
    what the cap leaves after the filter spectra, at least one image.
    """
    isz = itemsize or p.itemsize
    (pt, pb), (pl, pr) = p.padding
    lh = backward_length(p.ih, pt, pb, effective_extent(p.kh, p.dil_h), p.oh, p.sh, min_length)
    lw = backward_length(p.iw, pl, pr, effective_extent(p.kw, p.dil_w), p.ow, p.sw, min_length)
    room = cap - backward_filter_bytes(p, lh, lw, isz, factored)
    batch = max(1, min(p.mb, room // tile_bytes(p, lh, lw, isz)))
    return FftPlan(lh, lw, p.oh, p.ow, 1, 1, batch, factored)


def backward_workspace_bytes(p: ConvProblem, plan: FftPlan, itemsize: int | None = None) -> int:
    """Filter (gradient) spectra plus one batch of whole-image spectra."""
    isz = itemsize or p.itemsize
    return (backward_filter_bytes(p, plan.lh, plan.lw, isz, plan.factored)
            + plan.batch * tile_bytes(p, plan.lh, plan.lw, isz))


def adjoint_filter_spectra(w: np.ndarray, p: ConvProblem, plan: FftPlan, dtype: np.dtype,
                           workers: int = 1, scale: float = 1.0,
                           block: int | None = None) -> np.ndarray:
    """``scale * rfft2(w_f)`` (unconjugated) as ``(F, G, K/g, C/g)``, for backward data.

    ``w_f`` is the dilated filter with tap ``(0, 0)`` at ``(-pad) mod L``, as in
    the whole-image forward path; float64, rounded once. ``block`` filters are
    transformed at once, as in :func:`filter_spectra`.
    """
    kg, cg = p.oc // p.g, p.ic // p.g
    out = np.empty((plan.freqs, p.g, kg, cg), dtype=COMPLEX[np.dtype(dtype)])
    for k0, k1 in filter_blocks(p.oc, block):
        # conj(scale conj(z)) is scale z exactly: conjugation only flips a sign
        spec = np.conj(_conj_filter_spectra(w[k0:k1], p, plan, (p.ph, p.pw), workers, scale))
        for gi, lo, hi in group_spans(k0, k1, kg):  # out[f, g, k, c] = spec[k, c, f]
            out[:, gi, lo - gi * kg:hi - gi * kg] = spec[lo - k0:hi - k0].transpose(2, 0, 1)
    return out


def tap_positions(p: ConvProblem, plan: FftPlan) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the circular filter gradient where tap ``(r, s)`` sits."""
    rows = (np.arange(p.kh) * p.dil_h - p.ph) % plan.lh
    cols = (np.arange(p.kw) * p.dil_w - p.pw) % plan.lw
    return rows, cols
