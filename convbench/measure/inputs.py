"""Seeded inputs of a problem: uniform random data, or integers on which direct is exact.

The inputs are the operands of the problem's direction, in the order its
kernels' ``prepare`` takes them: ``(x, w, bias)`` forward, ``(dy, w, None)``
for ``bwd_d``, ``(x, dy, None)`` for ``bwd_w`` and ``bwd_wb``.
"""

from __future__ import annotations

import numpy as np

from convbench.problem.arguments import aligned_copy
from convbench.problem.conv_problem import ConvProblem

FILLS = ("random", "exact")

#: Significand bits (with the implicit one) of each dtype: integers up to
#: 2**bits are exact, and so is every partial sum that stays below it.
SIGNIFICAND_BITS = {"float16": 11, "float32": 24, "float64": 53}

Inputs = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def random_inputs(p: ConvProblem, seed: int = 0) -> Inputs:
    """Seeded inputs of ``p``'s direction, uniform in [-1, 1], in the problem's dtype (host)."""
    rng = np.random.default_rng(seed)
    if p.dir == "bwd_d":
        dy = rng.uniform(-1, 1, p.output_shape).astype(p.dtype)
        return dy, rng.uniform(-1, 1, p.weight_shape).astype(p.dtype), None
    x = rng.uniform(-1, 1, p.input_shape).astype(p.dtype)
    if p.dir in ("bwd_w", "bwd_wb"):
        return x, rng.uniform(-1, 1, p.output_shape).astype(p.dtype), None
    w = rng.uniform(-1, 1, p.weight_shape).astype(p.dtype)
    b = rng.uniform(-1, 1, p.oc).astype(p.dtype) if p.bias else None
    return x, w, b


def exact_magnitude(p: ConvProblem) -> int:
    """Largest |value| the exact fill draws: 2, or 1 for float16 (its 11 bits hold less)."""
    return 1 if p.dtype == "float16" else 2


def exact_budget(p: ConvProblem) -> int:
    """Products of the exact fill's largest magnitude that one output may sum exactly."""
    m = exact_magnitude(p)
    return (2 ** SIGNIFICAND_BITS[p.dtype] - m) // (m * m)


def exact_channels(p: ConvProblem) -> int:
    """Input channels per group left non-zero by the exact fill (forward).

    Values are integers in [-m, m] (see :func:`exact_magnitude`) and every
    product is at most m^2. If ``(n * m^2 + m) < 2**bits`` for the reduction
    length ``n`` each partial sum of any summation order is an integer the dtype
    holds exactly (float16 data is accumulated in float32 but *stored* in
    float16, so its output must fit 11 bits). Longer reductions keep only the
    first channels of each group non-zero: benchdnn's density reduction, made
    deterministic so that the guarantee holds for every output.
    """
    m = exact_magnitude(p)
    budget = (2 ** SIGNIFICAND_BITS[p.dtype] - m) // (m * m)
    return max(1, min(p.ic // p.g, budget // (p.kh * p.kw)))


def exact_output_channels(p: ConvProblem) -> int:
    """Output channels per group of ``dy`` left non-zero by the exact fill of ``bwd_d``.

    Each ``dx`` sums ``K/g`` channels times the taps that reach its pixel (at
    most ``R*S``); as for :func:`exact_channels`, the channels beyond the
    budget are zero.
    """
    return max(1, min(p.oc // p.g, exact_budget(p) // (p.kh * p.kw)))


def exact_positions(p: ConvProblem) -> int:
    """Positions ``(n, p, q)`` of ``dy`` left non-zero by the exact fill of ``bwd_w``/``bwd_wb``.

    Each ``dw`` (and ``db``) sums ``N*P*Q`` products, one per position; the
    positions past the budget, in ``(n, p, q)`` order, are zero in every channel.
    """
    return max(1, min(p.mb * p.oh * p.ow, exact_budget(p)))


def exact_inputs(p: ConvProblem, seed: int = 0) -> Inputs:
    """Integer-valued inputs on which direct convolution is exact in the problem's dtype.

    See :func:`exact_channels` for the argument (and :func:`exact_output_channels`,
    :func:`exact_positions` for the backward directions); the direct algorithm
    and im2col + GEMM must then match the float64 reference bit for bit.
    """
    m = exact_magnitude(p)
    rng = np.random.default_rng(seed)
    if p.dir == "bwd_d":
        dy = rng.integers(-m, m + 1, p.output_shape).astype(p.dtype)
        w = rng.integers(-m, m + 1, p.weight_shape).astype(p.dtype)
        keep, kg = exact_output_channels(p), p.oc // p.g
        if keep < kg:
            dy.reshape(p.mb, p.g, kg, p.oh, p.ow)[:, :, keep:] = 0
        return dy, w, None
    if p.dir in ("bwd_w", "bwd_wb"):
        x = rng.integers(-m, m + 1, p.input_shape).astype(p.dtype)
        dy = rng.integers(-m, m + 1, p.output_shape).astype(p.dtype)
        keep, plane = exact_positions(p), p.oh * p.ow
        if keep < p.mb * plane:
            position = np.arange(p.mb * plane).reshape(p.mb, 1, plane)
            flat = dy.reshape(p.mb, p.oc, plane)
            flat[np.broadcast_to(position >= keep, flat.shape)] = 0
        return x, dy, None
    x = rng.integers(-m, m + 1, p.input_shape).astype(p.dtype)
    w = rng.integers(-m, m + 1, p.weight_shape).astype(p.dtype)
    keep = exact_channels(p)
    cg = p.ic // p.g
    if keep < cg:
        x.reshape(p.mb, p.g, cg, p.ih, p.iw)[:, :, keep:] = 0
    b = rng.integers(-m, m + 1, p.oc).astype(p.dtype) if p.bias else None
    return x, w, b


def make_inputs(p: ConvProblem, seed: int = 0, fill: str = "random") -> Inputs:
    """Inputs for ``fill`` = ``"random"`` (uniform [-1, 1]) or ``"exact"`` (small integers),
    each on a cache-line boundary (``aligned_copy``), so that every kernel and baseline of
    a sweep reads inputs that start alike whatever the process allocated before."""
    if fill == "random":
        inputs = random_inputs(p, seed)
    elif fill == "exact":
        inputs = exact_inputs(p, seed)
    else:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    return tuple(None if a is None else aligned_copy(a) for a in inputs)
