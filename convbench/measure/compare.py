"""The one place that decides what differs too much: errors against their envelope,
errors against a baseline, times between two runs.

By data kind, as benchdnn's ``compare.cpp``:

* **error of an output** against the float64 reference: the element-wise
  error envelope of the algorithm (:func:`envelope`);
* **a check's records**: each against its envelope, and against a committed
  baseline of the same kernel and problem for drift on the same platform
  (:func:`check_records`);
* **time** of a measurement against the same measurement in another run
  (:func:`compare_runs`): a verdict from the interval of the ratio, which
  comes from each record's rounds, and an effect threshold.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from convbench.contract import ErrorModel
from convbench.measure.metrics import UNIT_ROUNDOFF, Reference, error_metrics
from convbench.measure.stats import (
    TIME_TOLERANCE,
    Ratio,
    RunNoise,
    ratio,
    run_noise,
    summary_of,
    verdict,
)
from convbench.problem import ConvProblem
from convbench.problem.arguments import array_module
from convbench.store.jsonl import Run
from convbench.store.records import Record, as_record

METRICS = ("rel_l2", "max_rel", "bound_ratio")
DEFAULT_FACTOR = 2.0
#: Floors in units of the dtype's unit roundoff (bound_ratio is already in those units).
FLOOR_UNITS = {"rel_l2": 4.0, "max_rel": 16.0, "bound_ratio": 2.0}


# ------------------------------------------------------------- error of an output
#: Probability, under the rounding model, that a correct kernel's output tensor
#: leaves its envelope: one false alarm in a million clean checks.
FALSE_ALARM = 1e-6
#: Unit roundoff of the float64 reference, whose own error adds to the measured one.
REFERENCE_ROUNDOFF = 2.0**-53

#: Winograd F(2x2,3x3), the GEMM over C/g channels: its partial sums combine, per
#: output, squared terms weighted by k_p(a) k_q(b) with k_p(a) = sum_xi A_xi,p^2
#: |G_xi|^2 (B^T_xi,a)^2 = (1, 1.5, 2.5, 0) or (0, 2.5, 1.5, 1); the largest weight,
#: 2.5^2, bounds any data pattern (a full window averages 25/9).
WINOGRAD_GEMM_WEIGHT = 6.25
#: Winograd's transform roundings (V = B^T d B in two stages, U rounded once, the
#: five additions of A^T M A + b), in units of the tile's largest squared scale:
#: 42.5 when all the data sit on one pixel, by exact enumeration over the
#: transform matrices (19.4 for a full window). Independent of C.
WINOGRAD_TRANSFORM_WEIGHT = 42.5
#: Rounded Winograd operands (fp16-stored U and V): each product U V is off by
#: 2 u_in |U V|, whose squares weigh at most 2.5^2 per term, as in the GEMM.
WINOGRAD_OPERAND_WEIGHT = 6.25
#: Winograd F(3x3,2x2) for bwd_w: its transform matrices (Lavin & Gray's) hold
#: larger entries than F(2x2,3x3)'s, so its envelope is F(2x2,3x3)'s model on the
#: N * tiles contraction, times this factor: an allowance, not a derived bound.
WINOGRAD_BWD_W_FACTOR = 4.0
#: FFT, per level of log2(L_h L_w): the forward and inverse transforms' butterfly
#: roundings (|twiddle| = 1, random signs), spread evenly over the tile (Parseval).
#: A least-squares fit of the largest legitimate errors over every shipped layer
#: gives 0.65 per level; 4 leaves 2.5x headroom in the error.
FFT_LEVEL_WEIGHT = 4.0
#: FFT channel contraction: a complex inner product over C/g terms, two real
#: products and sums per term.
FFT_CONTRACTION_WEIGHT = 2.0
#: Rounded FFT spectra: 2 u_in |X W| per complex product, spread over the tile.
FFT_OPERAND_WEIGHT = 2.0


def union_lambda(outputs: int, false_alarm: float = FALSE_ALARM) -> float:
    """``sqrt(2 ln(2 M / delta))``: Hoeffding's bound, union over ``M`` outputs."""
    return math.sqrt(2.0 * math.log(2.0 * max(int(outputs), 1) / false_alarm))


def gamma(n: int, u: float) -> float:
    """``gamma_n = n u / (1 - n u)``: the classical dot-product error factor."""
    return n * u / (1.0 - n * u) if n * u < 1.0 else math.inf


def taps_reaching(extent: int, stride: int, dilation: int) -> int:
    """Most filter taps along one axis that reach one input pixel in ``bwd_d``.

    Tap ``r`` reaches input row ``h`` when ``h + pad - r*d`` is a multiple of
    the stride: the taps that do step by ``stride / gcd(stride, d)``, so at most
    ``ceil(extent / that)`` of them (``ceil(R / sh)`` without dilation).
    """
    step = stride // math.gcd(stride, dilation)
    return -(-extent // step)


def reduction_length(p: ConvProblem) -> int:
    """Products summed into each output of ``p``'s direction (the envelope's ``n``).

    * ``fwd``: ``C/g * R * S``;
    * ``bwd_d``: ``K/g`` times the taps that reach one input pixel, at most
      ``R * S`` and fewer with stride (:func:`taps_reaching`);
    * ``bwd_w``, ``bwd_wb``: ``N * P * Q`` (the bias gradient sums as many).
    """
    if p.dir == "bwd_d":
        return (p.oc // p.g) * taps_reaching(p.kh, p.sh, p.dil_h) * \
            taps_reaching(p.kw, p.sw, p.dil_w)
    if p.dir in ("bwd_w", "bwd_wb"):
        return p.mb * p.oh * p.ow
    return p.reduction_length


def terms(p: ConvProblem) -> int:
    """Terms of each output's sum: :func:`reduction_length`, plus one for a forward bias."""
    return reduction_length(p) + (1 if p.bias and p.dir == "fwd" else 0)


def contraction_length(p: ConvProblem, family: str) -> int:
    """Length of the channel (or batch) contraction in transformed space.

    Winograd and FFT multiply transformed tiles and sum them over a dimension
    the transforms leave alone: ``C/g`` forward, ``K/g`` in ``bwd_d``, and in
    ``bwd_w`` the images (FFT, whose tile is the image) or the images times
    the 2x2 output tiles of ``dY`` (Winograd F(3x3,2x2)).
    """
    if p.dir == "bwd_d":
        return p.oc // p.g
    if p.dir in ("bwd_w", "bwd_wb"):
        if family == "winograd":
            return p.mb * (-(-p.oh // 2)) * (-(-p.ow // 2))
        return p.mb
    return p.ic // p.g


def envelope(p: ConvProblem, reference: Reference, model: ErrorModel,
             exact_fill: bool = False) -> Any:
    """Per-element bound on ``|y_i - ref_i|`` that a correct kernel stays within.

    A property of the algorithm family, the arithmetic and the data, not of
    one machine's summation order. Output ``i`` sums ``n`` terms; each rounding
    adds ``delta_j v_j`` with ``|delta_j| <= u``, independent and of mean zero
    (the probabilistic model of Higham and Mary), so by Hoeffding's inequality
    and a union bound over the ``M`` outputs (:func:`union_lambda`)::

        |y_i - ref_i| <= lam * sqrt(sum_j (u v_j)^2) + u_out |ref_i|

    for every output at once, with probability ``1 - FALSE_ALARM``. The sum of
    squares is bounded per family, from ``ref``, ``r = sqrt(W^2 * X^2 + b^2)``
    and ``s = |W| * |X| + |b|`` (see the constants above):

    * **direct** (any order of the products: direct, im2col + GEMM): the
      partial sums of exchangeable terms ending at ``ref_i`` have
      ``sum_j E[S_j^2] <= (n+2)/3 ref^2 + n/6 r^2``, plus ``r^2`` for the
      products; never more than the deterministic ``gamma_n s``;
    * **winograd**: the GEMM over ``C/g`` with the transforms' weights, plus the
      transforms' own roundings on the 2x2 tile's largest scale;
    * **fft**: normwise over a tile: the scale is the largest of ``r_i``,
      ``rms(r)`` over the (image, channel) plane and the image's own scale
      (:class:`~convbench.measure.metrics.Reference`), times the transform
      depth ``log2(L_h L_w)``;
    * **any**: the largest of the three.

    Operand rounding (TF32, fp16-stored tiles) adds ``(2 u_in)^2`` times the
    squared terms (no partial-sum growth). ``u`` is float32's for float16 data
    (fp32 accumulation), ``u_out`` the output dtype's; the float64 reference's
    own roundings are added. On the exact fill the direct family has no
    rounding at all: every partial sum is an integer the dtype holds
    (:func:`convbench.measure.inputs.exact_channels`), so its envelope is 0.

    In the backward directions the same model holds with the direction's
    reduction length (:func:`reduction_length`: ``(K/g)*R*S``, fewer with
    stride, for ``bwd_d``; ``N*P*Q`` for ``bwd_w``) and contraction
    (:func:`contraction_length`); ``ref`` and the scales are then those of
    ``dx`` or ``dw`` (:func:`~convbench.measure.metrics.reference_and_scales`).
    The weights of the Winograd terms are F(2x2,3x3)'s; F(3x3,2x2) (``bwd_w``)
    has its own transform matrices, whose weights are not derived here, so its
    envelope carries :data:`WINOGRAD_BWD_W_FACTOR`.

    Parameters
    ----------
    p : ConvProblem
    reference : Reference
        Reference and scales (NumPy or CuPy: the envelope is computed there).
    model : ErrorModel
        The kernel's algorithm family and operand rounding.
    exact_fill : bool
        The inputs are the exact fill's integers.
    """
    xp = array_module(reference.ref)
    ref, s, r = reference.ref, reference.abs_scale, reference.rss_scale
    if model.family == "any":
        parts = [envelope(p, reference, ErrorModel(f, model.operand_roundoff,
                                                   model.transform_size), exact_fill)
                 for f in ("direct", "winograd", "fft")]
        return xp.maximum(xp.maximum(parts[0], parts[1]), parts[2])
    u_in = model.operand_roundoff
    if exact_fill and model.family == "direct" and u_in == 0.0:
        return xp.zeros_like(ref)
    u_acc = UNIT_ROUNDOFF["float32" if p.dtype == "float16" else p.dtype]
    u_out = UNIT_ROUNDOFF[p.dtype]
    n = terms(p)
    cg = contraction_length(p, model.family)
    lam = union_lambda(ref.size)
    r2 = r * r
    partial_sums = (n + 2) / 3.0 * ref * ref + (n + 6) / 6.0 * r2
    variance = REFERENCE_ROUNDOFF**2 * partial_sums
    if model.family == "direct":
        variance = variance + u_acc**2 * partial_sums + (2 * u_in) ** 2 * r2
        bound = xp.minimum(lam * xp.sqrt(variance),
                           (gamma(n, u_acc) + gamma(n, REFERENCE_ROUNDOFF) + 2 * u_in
                            + u_in**2) * s)
    elif model.family == "winograd":
        if model.transforms is None:
            # F(2x2,3x3) tiles y (fwd) and dx (bwd_d) 2x2; F(3x3,2x2) makes all of a 3x3 dw.
            m = 3 if p.dir in ("bwd_w", "bwd_wb") else 2
            gemm_w, transform_w, operand_w = (WINOGRAD_GEMM_WEIGHT, WINOGRAD_TRANSFORM_WEIGHT,
                                              WINOGRAD_OPERAND_WEIGHT)
        else:
            growth = winograd_growth(model.transforms)
            m, gemm_w, transform_w = growth.m, growth.gemm_weight, growth.transform_weight
            operand_w = gemm_w
        tile = _tile_max(xp, r, m)
        variance = (variance + (u_acc**2 * gemm_w * (cg + 3) / 2.0
                                + (2 * u_in) ** 2 * operand_w) * r2
                    + u_acc**2 * transform_w * tile * tile)
        bound = lam * xp.sqrt(variance)
        if p.dir in ("bwd_w", "bwd_wb"):
            bound = WINOGRAD_BWD_W_FACTOR * bound
    else:
        size = model.transform_size or _fft_size_bound(p)
        plane = xp.maximum(xp.maximum(r, xp.sqrt(xp.mean(r2, axis=(2, 3), keepdims=True))),
                           reference.image_scale)
        variance = variance + (u_acc**2 * (FFT_LEVEL_WEIGHT * math.log2(max(size, 2))
                                           + FFT_CONTRACTION_WEIGHT * (cg + 3) / 2.0)
                               + (2 * u_in) ** 2 * FFT_OPERAND_WEIGHT) * plane * plane
        bound = lam * xp.sqrt(variance)
    return bound + u_out * xp.abs(ref)


def output_errors(p: ConvProblem, y: Any, reference: Any, model: ErrorModel,
                  exact_fill: bool = False) -> dict[str, Any]:
    """Error metrics of ``p``'s output(s) against the reference, held to their envelope.

    For ``bwd_wb``, ``y`` is ``(dw, db)`` and ``reference`` the pair of
    references: each output gets its own metrics (``parts``, ``db`` held to
    the direct family's envelope: whatever the algorithm, the bias gradient is
    a plain sum of ``N*P*Q`` terms), and each metric of the record is the
    worse of the two, so that a check sees either output fail.
    """
    if p.dir != "bwd_wb":
        limit = envelope(p, reference, model, exact_fill)
        return error_metrics(y, reference, p.dtype, limit)
    if not isinstance(y, (tuple, list)) or len(y) != 2:
        raise ValueError(f"a bwd_wb kernel returns the pair (dw, db), got {type(y).__name__}")
    parts = {}
    for name, out, ref, m in (("dw", y[0], reference[0], model),
                              ("db", y[1], reference[1],
                               ErrorModel("direct", model.operand_roundoff))):
        parts[name] = error_metrics(out, ref, p.dtype, envelope(p, ref, m, exact_fill))
    merged: dict[str, Any] = {key: max(parts["dw"][key], parts["db"][key])
                              for key in parts["dw"] if key != "nonfinite"}
    merged["nonfinite"] = parts["dw"]["nonfinite"] + parts["db"]["nonfinite"]
    merged["parts"] = parts
    return merged


@dataclass(frozen=True)
class WinogradGrowth:
    """Growth factors of one Winograd algorithm's transforms, from its matrices.

    Attributes
    ----------
    m : int
        Output tile.
    gemm_weight : float
        ``max_{p,a} k_p(a)^2`` with ``k_p(a) = sum_xi A_xi,p^2 |G_xi|^2 (B^T_xi,a)^2``:
        the weight of the squared terms of the GEMM's partial sums in one output
        (6.25 for F(2x2,3x3), as :data:`WINOGRAD_GEMM_WEIGHT`).
    transform_weight : float
        The transforms' own roundings, in units of the tile's largest squared
        scale: the largest, over data patterns, of the first-order variance of
        an output from every stored value of ``B^T d``, ``B^T d B``, ``U``,
        ``A^T M`` and ``A^T M A`` (each rounding scaled by the sum of squares
        of its partial sums, in the kernels' order), divided by the tile's
        largest ``sum (w x)^2``. The patterns: one input pixel at each place of
        the tile with each single filter tap and with all taps, and full tiles
        of ones and of fixed random signs.
    """

    m: int
    gemm_weight: float
    transform_weight: float


def _partial_squares(terms: Any) -> Any:
    """``sum_k (sum_{l<=k} |t_l|)^2`` over the nonzero terms of the last axis: a sum's
    rounding scale."""
    import numpy as np  # noqa: PLC0415

    run = np.cumsum(np.abs(terms), axis=-1)
    return np.sum(run * run * (terms != 0), axis=-1)


@functools.lru_cache(maxsize=32)
def winograd_growth(transforms: tuple) -> WinogradGrowth:
    """:class:`WinogradGrowth` of ``(A^T, G, B^T)`` (nested tuples, as ErrorModel holds)."""
    import numpy as np  # noqa: PLC0415 -- host arithmetic on matrices of at most 8x8

    a_t, g, b_t = (np.array(mat, dtype=np.float64) for mat in transforms)
    m, alpha = a_t.shape
    taps = g.shape[1]
    k = (a_t.T**2 * (g**2).sum(axis=1)[:, None]).T @ (b_t**2)  # k[p, a]
    gemm_weight = float(k.max()) ** 2
    rng = np.random.default_rng(0)
    patterns = []
    for a in range(alpha):
        for b in range(alpha):
            d = np.zeros((alpha, alpha))
            d[a, b] = 1.0
            for tap in range(taps * taps + 1):
                f = np.ones((taps, taps)) if tap == taps * taps else \
                    np.eye(1, taps * taps, tap).reshape(taps, taps)
                patterns.append((d, f))
    patterns.append((np.ones((alpha, alpha)), np.ones((taps, taps))))
    for _ in range(4):
        patterns.append((rng.choice([-1.0, 1.0], (alpha, alpha)),
                         rng.choice([-1.0, 1.0], (taps, taps))))
    a2 = a_t**2
    worst = 0.0
    for d, f in patterns:
        u = g @ f @ g.T
        t1 = b_t @ d  # t1[xi, col] = sum_a B^T[xi, a] d[a, col]
        v = t1 @ b_t.T
        mm = u * v
        t2 = a_t @ mm
        r2 = np.array([[np.sum(f**2 * d[p:p + taps, q:q + taps] ** 2) for q in range(m)]
                       for p in range(m)])
        if r2.max() == 0:
            continue
        # B^T d: dy[p,q]/dt1[xi,col] = A^T[p,xi] sum_nu A^T[q,nu] U[xi,nu] B^T[nu,col]
        w = np.einsum("qn,xn,nc->qxc", a_t, u, b_t)
        ps1 = _partial_squares(b_t[:, None, :] * d.T[None, :, :])  # [xi, col] over a
        var = np.einsum("px,qxc,xc->pq", a2, w**2, ps1)
        # B^T d B: dy/dV[xi,nu] = A^T[p,xi] A^T[q,nu] U[xi,nu]; U rounded: ... V[xi,nu]
        ps2 = _partial_squares(t1[:, None, :] * b_t[None, :, :])  # [xi, nu] over col
        var = var + np.einsum("px,qn,xn->pq", a2, a2, u**2 * ps2 + v**2 * u**2)
        # A^T M: dy[p,q]/dt2[p,nu] = A^T[q,nu]; A^T M A: the output's own sum
        ps4 = _partial_squares(a_t[:, None, :] * mm.T[None, :, :])  # [p, nu] over xi
        var = var + np.einsum("qn,pn->pq", a2, ps4)
        var = var + _partial_squares(t2[:, None, :] * a_t[None, :, :])  # [p, q] over nu
        worst = max(worst, float(var.max() / r2.max()))
    return WinogradGrowth(m, gemm_weight, worst)


def _tile_max(xp: Any, a: Any, tile: int) -> Any:
    """Each element replaced by the largest of its ``tile x tile`` output tile."""
    n, k, h, w = a.shape
    hp, wp = -(-h // tile) * tile, -(-w // tile) * tile
    padded = xp.zeros((n, k, hp, wp), dtype=a.dtype)
    padded[:, :, :h, :w] = a
    blocks = padded.reshape(n, k, hp // tile, tile, wp // tile, tile).max(axis=(3, 5))
    return xp.repeat(xp.repeat(blocks, tile, axis=2), tile, axis=3)[:, :, :h, :w]


def _fft_size_bound(p: ConvProblem) -> int:
    """An upper bound on the FFT size: the padded image in powers of two."""
    return (1 << max(1, math.ceil(math.log2(p.padded_height)))) * \
        (1 << max(1, math.ceil(math.log2(p.padded_width))))


# ---------------------------------------------------------- errors of a check
@dataclass
class Finding:
    """One measurement that fails the check, or (``info``) differs from another platform's.

    ``what`` names the metric or the failure; ``baseline``, ``measured`` and
    ``limit`` are the numbers behind it where there are any.
    """

    kernel: str
    problem: str
    name: str
    what: str
    baseline: float | None = None
    measured: float | None = None
    limit: float | None = None


@dataclass
class CheckOutcome:
    """What a check found: failures, information, and how many measurements passed."""

    findings: list[Finding]
    information: list[Finding]
    passed: int
    worst: Record | None  # the passing record closest to its envelope


def threshold(metric: str, base: float, dtype: str, factor: float) -> float:
    """The largest value of ``metric`` that is no drift from ``base`` on the same platform.

    ``factor`` times the baseline, with floors in units of the dtype's unit
    roundoff (:data:`FLOOR_UNITS`) so that a tiny baseline does not flag the
    last bit; a baseline of exactly 0 must stay 0.
    """
    if base == 0.0:
        return 0.0
    floor = FLOOR_UNITS[metric] * (1.0 if metric == "bound_ratio" else UNIT_ROUNDOFF[dtype])
    return max(factor * base, floor)


def check_records(records: Iterable[dict[str, Any]],
                  entries: dict[tuple[str, str], Any] | None = None, *,
                  same_platform: bool = False, factor: float = DEFAULT_FACTOR,
                  exact_fill: bool = False) -> CheckOutcome:
    """Hold each record to its error envelope; compare with a baseline for drift.

    A record fails when its kernel failed, its output is not finite, or its
    ``envelope_ratio`` exceeds 1 (on the exact fill, where the direct family
    must be bit-exact, the failure names ``max_abs``). Against the baseline
    ``entries`` (keyed by (kernel, descriptor)): on the same platform
    (``same_platform``) a metric above :func:`threshold` or a status change is
    drift, and fails; from another platform the same differences are only
    information, since a new CPU, BLAS or GPU changes summation orders.
    """
    entries = entries or {}
    findings: list[Finding] = []
    information: list[Finding] = []
    passed = 0
    worst: Record | None = None
    for rec in map(as_record, records):
        base = entries.get((rec.kernel, rec["problem"]))
        found = _verdict(rec, exact_fill)
        drift = _drift(rec, base, factor)
        (findings if same_platform else information).extend(drift)
        findings.extend(found)
        if not found and not (same_platform and drift):
            passed += 1
            ratio = rec.error("envelope_ratio")
            if ratio is not None and (worst is None or ratio > worst.error("envelope_ratio")):
                worst = rec
    return CheckOutcome(findings, information, passed, worst)


def _verdict(rec: Record, exact_fill: bool) -> list[Finding]:
    """What fails in ``rec`` by the portable rule alone."""
    where = (rec.kernel, rec["problem"], rec.label)
    if rec.status == "failed":
        return [Finding(*where, f"failed: {rec.get('reason')}")]
    if not rec.ok:
        return []  # skipped: nothing was computed, nothing to hold to a rule
    error = rec.get("error") or {}
    if error.get("nonfinite"):
        return [Finding(*where, f"{error['nonfinite']} non-finite outputs")]
    ratio = rec.error("envelope_ratio")
    if ratio is None or ratio <= 1.0:
        return []
    if exact_fill and math.isinf(ratio):
        return [Finding(*where, "max_abs (exact fill: must be 0)", 0.0, rec.error("max_abs"),
                        0.0)]
    return [Finding(*where, "envelope_ratio", None, ratio, 1.0)]


def _drift(rec: Record, base: dict[str, Any] | None, factor: float) -> list[Finding]:
    """How ``rec`` differs from its baseline entry beyond :func:`threshold`."""
    if base is None or rec.status == "failed":
        return []
    where = (rec.kernel, rec["problem"], rec.label)
    if rec.status != base["status"]:
        return [Finding(*where, f"status {base['status']} -> {rec.status}: "
                                f"{rec.get('reason') or ''}")]
    if not rec.ok:
        return []
    out = []
    for metric in METRICS:
        old, new = base.get(metric), rec.error(metric)
        if old is None or new is None:
            continue
        limit = threshold(metric, float(old), rec["dtype"], factor)
        if not new <= limit:  # also catches NaN
            out.append(Finding(*where, metric, float(old), new, limit))
    return out


@dataclass
class Margin:
    """How far the smallest planted fault lies above the largest legitimate error."""

    kernel: str
    metric: str
    largest_legitimate: float | None
    legitimate_at: str
    smallest_fault: float | None
    fault_at: str

    @property
    def ratio(self) -> float | None:
        if not self.largest_legitimate or self.smallest_fault is None:
            return None
        return self.smallest_fault / self.largest_legitimate


#: Metrics whose margins a check's validation reports.
MARGIN_METRICS = ("envelope_ratio", "rel_l2", "max_rel", "bound_ratio")
#: A planted fault bites a layer where it moves the output this many times farther
#: from the reference (rel_l2) than the correct kernel's own rounding; elsewhere
#: what changed is rounding (an FFT one point short on a zero-padded layer wraps
#: only zeros round, but its other size rounds differently).
FAULT_EFFECT = 10.0


def fault_bites(fault: dict[str, Any], clean: dict[str, Any] | None) -> bool:
    """Whether a faulty record's output is really wrong, against the correct one's."""
    fault, clean = as_record(fault), None if clean is None else as_record(clean)
    if clean is None or not clean.ok:
        return False
    if fault.status == "failed":
        return True
    theirs, ours = fault.rel_l2, clean.rel_l2
    if theirs is None or ours is None:
        return False
    return theirs > FAULT_EFFECT * ours if ours else theirs > 0


def margins(legitimate: Iterable[dict[str, Any]], faulty: Iterable[dict[str, Any]],
            metrics: tuple[str, ...] = MARGIN_METRICS) -> list[Margin]:
    """Largest legitimate and smallest faulty value of each metric, per kernel name.

    A faulty record counts only where the fault bites (:func:`fault_bites`).
    Float64 and float32 are apart in ``rel_l2``-like metrics by 2^29, so each
    metric is compared within one dtype per kernel.
    """
    clean = {(r["kernel"], r["problem"]): r for r in map(as_record, legitimate) if r.ok}
    out = []
    faulty = [r for r in map(as_record, faulty) if r.ok]
    for kernel in sorted({k for k, _ in clean} & {r.kernel for r in faulty}):
        for dtype in sorted({r["dtype"] for r in faulty if r.kernel == kernel}):
            ours = [r for (k, _), r in clean.items() if k == kernel and r["dtype"] == dtype]
            bad = [r for r in faulty if r.kernel == kernel and r["dtype"] == dtype
                   and fault_bites(r, clean.get((kernel, r["problem"])))]
            for metric in metrics:
                legit = [(r.error(metric), r.label) for r in ours
                         if r.error(metric) is not None]
                fault = [(r.error(metric), r.label) for r in bad if r.error(metric) is not None]
                hi = max(legit, default=(None, ""))
                lo = min(fault, default=(None, ""))
                out.append(Margin(f"{kernel} {dtype}", metric, hi[0], hi[1], lo[0], lo[1]))
    return out


def widest_margins(per_run: Iterable[list[Margin]]) -> list[Margin]:
    """Margins over several runs (platforms): the largest legitimate value of any run
    against the smallest fault of any run, per kernel and metric."""
    merged: dict[tuple[str, str], Margin] = {}
    for rows in per_run:
        for m in rows:
            have = merged.get((m.kernel, m.metric))
            if have is None:
                merged[(m.kernel, m.metric)] = Margin(**vars(m))
                continue
            if _above(m.largest_legitimate, have.largest_legitimate):
                have.largest_legitimate, have.legitimate_at = m.largest_legitimate, \
                    m.legitimate_at
            if _above(have.smallest_fault, m.smallest_fault):
                have.smallest_fault, have.fault_at = m.smallest_fault, m.fault_at
    return list(merged.values())


def _above(a: float | None, b: float | None) -> bool:
    """``a > b``, where a missing value is below every number (and ``a`` must exist)."""
    return a is not None and (b is None or a > b)


# ----------------------------------------------------------------- time between runs
@dataclass
class Comparison:
    """One (problem, kernel) present in both runs.

    Attributes
    ----------
    key : tuple
    old, new : Record
    time_ratio : Ratio or None
        new / old median time with its 95% interval (> 1 is slower); None
        where either is not timed. Records without samples have a ratio
        without an interval (``lo`` and ``hi`` NaN).
    verdict : str or None
        :func:`convbench.measure.stats.verdict` of ``time_ratio``:
        ``faster``, ``slower``, ``same`` or ``unclear``.
    error_ratio : float or None
        new / old ``rel_l2`` (> 1 is less accurate).
    regressions : list of str
        What makes this pair a regression: a significant slowdown beyond the
        tolerance, an error beyond its threshold, or ``ok`` now ``failed``.
    same_platform : bool
        False where the two were measured on different platforms (known
        fingerprints that differ): their times are not compared then
        (``time_ratio`` and ``verdict`` None), only their errors and status.
    """

    key: tuple[str, str, str, str]
    old: Record
    new: Record
    time_ratio: Ratio | None
    verdict: str | None
    error_ratio: float | None
    regressions: list[str]
    same_platform: bool = True


def _pairs(old: Run, new: Run) -> list[tuple[tuple[str, str, str, str], Record, Record, bool]]:
    """(key, old, new, same platform) for every measurement both runs hold.

    On each platform both runs measured, the last record per key on it pairs
    with the other run's on the same platform; a key measured only on other
    platforms pairs across them (``same platform`` false). An unknown
    platform (a file from before fingerprints) pairs with any.
    """
    olds, news = old.latest_per_platform(), new.latest_per_platform()
    out = []
    for key in sorted({k for d in olds.values() for k in d} & {k for d in news.values()
                                                                for k in d}):
        a_by = {p: d[key] for p, d in olds.items() if key in d}
        b_by = {p: d[key] for p, d in news.items() if key in d}
        same = [(a_by[p], b_by[p]) for p in a_by if p in b_by]
        if not same and (None in a_by or None in b_by):
            same = [(next(reversed(a_by.values())), next(reversed(b_by.values())))]
        if same:
            out += [(key, a, b, True) for a, b in same]
        else:
            out.append((key, next(reversed(a_by.values())), next(reversed(b_by.values())),
                        False))
    return out


def time_verdict(old: Record, new: Record, time_tol: float = TIME_TOLERANCE,
                 noise: RunNoise | None = None) -> tuple[Ratio | None, str | None]:
    """new / old time with its interval, and its verdict (unpaired: two runs).

    ``noise`` is the two runs' pooled run-to-run noise (:func:`run_noise`),
    which widens the interval. Without samples (files that keep only medians)
    the ratio has no interval, and a change beyond the tolerance is
    ``unclear``: it cannot be told from noise.
    """
    ta, tb = old.median_s, new.median_s
    if not ta or not tb:
        return None, None
    sa, sb = summary_of(old), summary_of(new)
    if sa is None or sb is None:
        r = Ratio(tb / ta, math.nan, math.nan, False)
        beyond = r.value > 1 + time_tol or r.value < 1 / (1 + time_tol)
        return r, "unclear" if beyond else "same"
    noise = noise or RunNoise(0.0, math.inf, 0)
    r = ratio(sb, sa, run_log_var=noise.log_var, run_df=noise.df)
    return r, verdict(r, time_tol)


def pair_noise(pairs: list[tuple[Any, Record, Record, bool]]) -> RunNoise:
    """:func:`~convbench.measure.stats.run_noise` of the timed, same-platform pairs."""
    summaries = []
    for _, a, b, same_platform in pairs:
        if not same_platform or not a.median_s or not b.median_s:
            continue
        sa, sb = summary_of(a), summary_of(b)
        if sa is not None and sb is not None:
            summaries.append((sa, sb))
    return run_noise(summaries)


def runs_noise(old: Run, new: Run) -> RunNoise:
    """The run-to-run noise that :func:`compare_runs` adds to every interval."""
    return pair_noise(_pairs(old, new))


def compare_runs(old: Run, new: Run, *, time_tol: float = TIME_TOLERANCE,
                 err_tol: float = DEFAULT_FACTOR) -> list[Comparison]:
    """Pair up records of two runs, give each time a verdict and flag regressions.

    A time regression is a ``slower`` verdict: the interval of new / old
    lies above 1 and the ratio exceeds ``1 + time_tol``
    (:func:`convbench.measure.stats.verdict`; the interval comes from each
    record's rounds, widened by the two runs' run-to-run noise pooled over all
    their records, :func:`pair_noise`). Records pair on the same platform
    (:meth:`~convbench.store.jsonl.Run.latest_per_platform`); a measurement the
    two runs made only on different platforms gets no time ratio, since a
    time means nothing on another machine. An error regression is a ``rel_l2`` above
    :func:`threshold` with factor ``err_tol`` (its floor keeps last-bit noise
    from flagging); a record that was ``ok`` and is now ``failed`` is a
    regression too.
    """
    out = []
    pairs = _pairs(old, new)
    noise = pair_noise(pairs)
    for key, a, b, same_platform in pairs:
        regressions = []
        error_ratio = None
        if a.get("status") == "ok" and b.get("status") == "failed":
            regressions.append(f"failed: {b.get('reason')}")
        time_ratio, time_word = (time_verdict(a, b, time_tol, noise) if same_platform
                                 else (None, None))
        if time_word == "slower":
            regressions.append(f"time x{time_ratio.value:.2f}")
        ea, eb = a.rel_l2, b.rel_l2
        if ea is not None and eb is not None:
            limit = threshold("rel_l2", ea, b.get("dtype") or "float32", err_tol)
            error_ratio = eb / ea if ea else (math.inf if eb else 1.0)
            if not eb <= limit:
                regressions.append(f"rel_l2 x{error_ratio:.2f}")
        out.append(Comparison(key, a, b, time_ratio, time_word, error_ratio, regressions,
                              same_platform))
    return out
