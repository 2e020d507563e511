"""What the CPU FFT kernel holds beyond its operands, and the plans that keep it under the cap.

The figures count the host arrays of :mod:`kernels.cpu.fft` as they are
allocated, pocketfft's temporaries included (``irfft2`` transforms a copy of
its input along the first axis; ``rfft2(x, s=...)`` zero-pads a copy of
``x``), in bytes: ``r`` is the real item size, ``c = 2r`` the complex one,
``F = L_h (L_w/2 + 1)`` frequencies, ``A = L_h L_w`` points.

* **forward**: the filter spectra (kept), one batch of tiles
  (:func:`kernels.algorithms.fft.tile_bytes`), and, in ``prepare``, the float64
  temporaries of the filter transform, done in blocks of filters
  (:func:`filter_block`);
* **backward**: per path, what ``prepare`` keeps (filter spectra, the summed
  gradient spectra, or the taps' spectra), what a batch of images holds, and
  what ``prepare`` or the end of a call holds beside what is kept
  (:func:`backward_workspace_bytes`).

A backward pass takes its preferred path (stored spectra, or tap-factored for
small filters: :func:`kernels.algorithms.fft.tap_factored`) when one image fits
the cap that way, else the other path; with neither, the plan that needs less,
which the kernel refuses.
"""

from __future__ import annotations

from dataclasses import replace

from convbench.problem import ConvProblem

from ..algorithms import fft as algorithm
from ..algorithms.fft import FftPlan
from .base import LIBRARY_BYTES, LIBRARY_SHARE

#: Bytes the temporaries of one block of a filter transform may take, where the
#: cap leaves them and a batch of the call takes less (larger blocks: fewer calls).
FILTER_BLOCK_BYTES = 8 * 2**20
#: Frequency chunks of bwd_w's sum over batches: the product of a batch is added
#: into the total a chunk at a time, so its temporary is this share of the total.
SUM_CHUNKS = 8
#: Bytes per (frequency, tap) of :func:`kernels.algorithms.fft.tap_spectra`'s
#: temporaries: the integer phases, the angles, their cosines and sines (8 each),
#: the complex128 result and one product (16 each).
TAP_TRANSFORM_BYTES = 72


def block_budget(batch_bytes: int, room: int) -> int:
    """Bytes a block of a transform in ``prepare`` may take: what a batch of the call
    takes, or :data:`FILTER_BLOCK_BYTES` where ``room`` (the cap less the kept arrays)
    allows that much."""
    return max(batch_bytes, min(FILTER_BLOCK_BYTES, room))


def filter_block(p: ConvProblem, plan: FftPlan, budget: int) -> int:
    """Filters transformed at once so that their temporaries fit ``budget`` (at least one)."""
    per_filter = algorithm.filter_transform_bytes(p, plan, 1)
    return max(1, min(p.oc, budget // max(1, per_filter)))


def filter_transform_peak(p: ConvProblem, plan: FftPlan, budget: int) -> int:
    """Bytes of the filter transform's temporaries in blocks of :func:`filter_block`."""
    return algorithm.filter_transform_bytes(p, plan, filter_block(p, plan, budget))


def forward_budget(p: ConvProblem, plan: FftPlan, cap: int) -> int:
    """Bytes a block of the forward's filter transform may take (:func:`block_budget`)."""
    spectra = algorithm.filter_bytes(p, plan.lh, plan.lw, p.itemsize)
    batch = plan.batch * algorithm.tile_bytes(p, plan.lh, plan.lw, p.itemsize)
    return block_budget(batch, arrays_cap(cap) - spectra)


def forward_workspace_bytes(p: ConvProblem, plan: FftPlan, cap: int) -> int:
    """Filter spectra plus the larger of a batch of tiles and the transform's temporaries."""
    spectra = algorithm.filter_bytes(p, plan.lh, plan.lw, p.itemsize)
    batch = plan.batch * algorithm.tile_bytes(p, plan.lh, plan.lw, p.itemsize)
    transform = filter_transform_peak(p, plan, forward_budget(p, plan, cap))
    return with_libraries(spectra + max(batch, transform))


def with_libraries(arrays: int) -> int:
    """``arrays`` and pocketfft's and BLAS's allowance (:func:`kernels.cpu.base.CappedWorkspace.
    with_libraries`)."""
    return arrays + min(LIBRARY_BYTES, arrays // LIBRARY_SHARE)


def arrays_cap(cap: int) -> int:
    """What the arrays may take under ``cap`` with the libraries' allowance beside them."""
    return cap - min(LIBRARY_BYTES, cap // LIBRARY_SHARE)


def _freqs_points(plan: FftPlan) -> tuple[int, int]:
    return plan.freqs, plan.lh * plan.lw


def image_bytes(p: ConvProblem, plan: FftPlan) -> int:
    """Bytes a batch holds per image in ``p``'s backward pass on ``plan``'s path.

    Every path keeps ``dy`` zero-stuffed (``K A r``). Beside it, the larger of
    two moments of a batch:

    * stored bwd_d: the channel contraction (``dY`` and its transposed copy,
      the product and its copy: ``2 F c (K + C)``), or the inverse (the spectra,
      pocketfft's copy and ``dx``: ``2 C F c + C A r``);
    * stored bwd_w: ``x`` zero-padded and its spectra (``C A r + C F c``), or the
      spectra of ``x``, of ``dY`` and its conjugate (``C F c + 2 K F c``);
    * tap-factored bwd_d: ``dY``, the sum and one tap's product
      (``K F c + 2 C F c``), or the inverse as stored;
    * tap-factored bwd_w: the padded ``x`` as stored, or the spectra of ``x``
      and ``dY``, ``x``'s and one tap's in complex128 and the GEMM's
      contiguous operands (``C F c + K F c + 16 F (C + K) + 16 F (C/g + K/g)``).
    """
    r, c = p.itemsize, 2 * p.itemsize
    f, a = _freqs_points(plan)
    k, ch = p.oc, p.ic
    stuffed = k * a * r
    inverse = 2 * ch * f * c + ch * a * r
    if p.dir == "bwd_d":
        if plan.factored:
            return stuffed + max(k * f * c + 2 * ch * f * c, inverse)
        return stuffed + max(2 * f * c * (k + ch), inverse)
    padded = ch * a * r + ch * f * c
    if plan.factored:
        gemm = ch * f * c + k * f * c + 16 * f * (ch + k) + 16 * f * (ch + k) // p.g
        return stuffed + max(padded, gemm)
    return stuffed + max(padded, ch * f * c + 2 * k * f * c)


def kept_bytes(p: ConvProblem, plan: FftPlan) -> int:
    """What ``prepare`` keeps for the calls of ``p``'s backward pass, besides ``dy``'s buffer.

    Stored: the filter spectra (bwd_d) or the summed gradient spectra (bwd_w),
    ``K C/g F c``. Tap-factored: the taps' spectra (``F R S c``) and the filter
    as taps (bwd_d), or the taps' inverse weights in complex128 and the float64
    sum (bwd_w).
    """
    f, _ = _freqs_points(plan)
    taps, cg = p.kh * p.kw, p.ic // p.g
    if not plan.factored:
        return algorithm.filter_bytes(p, plan.lh, plan.lw, p.itemsize)
    if p.dir == "bwd_d":
        return f * taps * 2 * p.itemsize + taps * p.oc * cg * p.itemsize
    return f * taps * 16 + p.oc * cg * taps * 8


def final_block(p: ConvProblem, plan: FftPlan, budget: int) -> int:
    """Filters of stored bwd_w's inverse transformed at once, their arrays within ``budget``.

    Per filter: its ``C/g`` summed spectra as a contiguous copy, pocketfft's
    copy of them and the inverse (``C/g (2 F c + A r)``).
    """
    f, a = _freqs_points(plan)
    per_filter = (p.ic // p.g) * (2 * f * 2 * p.itemsize + a * p.itemsize)
    return max(1, min(p.oc, budget // max(1, per_filter)))


def side_bytes(p: ConvProblem, plan: FftPlan, budget: int) -> int:
    """What ``prepare``, or the end of a call, holds beside the kept arrays, not with a batch.

    Stored bwd_d: the filter transform's float64 temporaries. Stored bwd_w:
    the inverse of the summed spectra, in blocks of filters
    (:func:`final_block`). Both in blocks within ``budget`` (at least one
    filter). Tap-factored: the taps' spectra being computed.
    """
    f, a = _freqs_points(plan)
    if plan.factored:
        return f * p.kh * p.kw * TAP_TRANSFORM_BYTES
    if p.dir == "bwd_d":
        return filter_transform_peak(p, plan, budget)
    kb = final_block(p, plan, budget)
    return kb * (p.ic // p.g) * (2 * f * 2 * p.itemsize + a * p.itemsize)


def sum_chunk_bytes(p: ConvProblem, plan: FftPlan) -> int:
    """What a batch adds into bwd_w's sum at once: stored, the batch's product a frequency
    chunk at a time; tap-factored, one tap's and group's float64 ``K/g x C/g`` GEMM."""
    if p.dir == "bwd_d":
        return 0
    if plan.factored:
        return (p.oc // p.g) * (p.ic // p.g) * 8
    return -(-algorithm.filter_bytes(p, plan.lh, plan.lw, p.itemsize) // SUM_CHUNKS)


def backward_budget(p: ConvProblem, plan: FftPlan, cap: int) -> int:
    """Bytes a block of the side arrays may take (:func:`block_budget`), beside the stuffed
    ``dy`` where it is kept then (stored bwd_w)."""
    batch = plan.batch * image_bytes(p, plan) + sum_chunk_bytes(p, plan)
    beside = stuffed_bytes(p, plan) if p.dir != "bwd_d" and not plan.factored else 0
    return block_budget(batch - beside, arrays_cap(cap) - kept_bytes(p, plan) - beside)


def stuffed_bytes(p: ConvProblem, plan: FftPlan) -> int:
    """The zero-stuffed ``dy`` of a batch, which a call keeps from its first batch to its end."""
    return plan.batch * p.oc * plan.lh * plan.lw * p.itemsize


def backward_workspace_bytes(p: ConvProblem, plan: FftPlan, cap: int) -> int:
    """The kept arrays, plus the larger of a batch (with its sum's chunk) and the side arrays
    (stored bwd_w's inverse at the end of a call, beside the stuffed ``dy``)."""
    batch = plan.batch * image_bytes(p, plan) + sum_chunk_bytes(p, plan)
    side = side_bytes(p, plan, backward_budget(p, plan, cap))
    if p.dir != "bwd_d" and not plan.factored:
        side += stuffed_bytes(p, plan)
    return with_libraries(kept_bytes(p, plan) + max(batch, side))


def _path_plan(p: ConvProblem, cap: int, factored: bool) -> FftPlan:
    """The whole-image lengths of ``p`` and as many images per batch as ``cap`` allows (>= 1)."""
    plan = replace(algorithm.plan_fft_backward(p, cap, factored=factored), batch=1)
    per_image = max(1, image_bytes(p, plan))
    room = arrays_cap(cap) - kept_bytes(p, plan) - sum_chunk_bytes(p, plan)
    return replace(plan, batch=max(1, min(p.mb, room // per_image)))


def plan_backward(p: ConvProblem, cap: int) -> FftPlan:
    """``p``'s backward plan under ``cap``: the preferred path if it fits, else the other.

    With neither, the plan of the path that needs fewer bytes for one image
    (over the cap: the kernel refuses it with those bytes).
    """
    preferred = algorithm.tap_factored(p)
    plans = [_path_plan(p, cap, factored) for factored in (preferred, not preferred)]
    for plan in plans:
        if backward_workspace_bytes(p, plan, cap) <= cap:
            return plan
    return min(plans, key=lambda plan: backward_workspace_bytes(p, plan, cap))
