"""Error metrics of a kernel's output against the float64 reference.

``bound_ratio`` expresses the worst error in units of the classical
dot-product error scale ``u * (|W| * |X| + |b|)_i`` (``u`` = unit roundoff of
the dtype), so numbers compare across layers, dtypes and algorithms: a
recursive-summation direct convolution stays below ``n = C/g*R*S`` by theory
and is typically near ``sqrt(n)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbench.problem import ConvProblem
from convbench.reference import reference_for
from convbench.validation import to_host

#: Unit roundoff ``u = 2^-t`` (half an ulp of 1) per dtype.
UNIT_ROUNDOFF = {"float16": 2.0**-11, "float32": 2.0**-24, "float64": 2.0**-53}

#: ``max_rel`` divides by ``max(|ref_i|, MAX_REL_FLOOR * max|ref|)`` so that
#: outputs that happen to be near zero do not dominate it.
MAX_REL_FLOOR = 1e-3


FILLS = ("random", "exact")

#: Significand bits (with the implicit one) of each dtype: integers up to
#: 2**bits are exact, and so is every partial sum that stays below it.
SIGNIFICAND_BITS = {"float16": 11, "float32": 24, "float64": 53}


def random_inputs(p: ConvProblem, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                          np.ndarray | None]:
    """Seeded inputs, uniform in [-1, 1], in the problem's dtype (host arrays)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, p.input_shape).astype(p.dtype)
    w = rng.uniform(-1, 1, p.weight_shape).astype(p.dtype)
    b = rng.uniform(-1, 1, p.oc).astype(p.dtype) if p.bias else None
    return x, w, b


def exact_channels(p: ConvProblem) -> int:
    """Input channels per group left non-zero by the exact fill.

    Values are integers in [-m, m] (m = 2, or 1 for float16) and every product
    is at most m^2. If ``(n * m^2 + m) < 2**bits`` for the reduction length ``n``
    each partial sum of any summation order is an integer the dtype holds
    exactly (float16 data is accumulated in float32 but *stored* in float16,
    so its output must fit 11 bits). Longer reductions keep only the first
    channels of each group non-zero: benchdnn's density reduction, made
    deterministic so that the guarantee holds for every output.
    """
    m = 1 if p.dtype == "float16" else 2
    budget = (2 ** SIGNIFICAND_BITS[p.dtype] - m) // (m * m)
    return max(1, min(p.ic // p.g, budget // (p.kh * p.kw)))


def exact_inputs(p: ConvProblem, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                         np.ndarray | None]:
    """Integer-valued inputs on which direct convolution is exact in the problem's dtype.

    See :func:`exact_channels` for the argument; the direct algorithm and
    im2col + GEMM must then match the float64 reference bit for bit.
    """
    m = 1 if p.dtype == "float16" else 2
    rng = np.random.default_rng(seed)
    x = rng.integers(-m, m + 1, p.input_shape).astype(p.dtype)
    w = rng.integers(-m, m + 1, p.weight_shape).astype(p.dtype)
    keep = exact_channels(p)
    cg = p.ic // p.g
    if keep < cg:
        x.reshape(p.mb, p.g, cg, p.ih, p.iw)[:, :, keep:] = 0
    b = rng.integers(-m, m + 1, p.oc).astype(p.dtype) if p.bias else None
    return x, w, b


def make_inputs(p: ConvProblem, seed: int = 0, fill: str = "random") -> tuple[
        np.ndarray, np.ndarray, np.ndarray | None]:
    """Inputs for ``fill`` = ``"random"`` (uniform [-1, 1]) or ``"exact"`` (small integers)."""
    if fill == "random":
        return random_inputs(p, seed)
    if fill == "exact":
        return exact_inputs(p, seed)
    raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")


def error_metrics(y: Any, ref: np.ndarray, scale: np.ndarray, dtype: str) -> dict[str, float]:
    """``rel_l2``, ``max_abs``, ``max_rel``, ``bound_ratio`` and ``nonfinite``.

    Parameters
    ----------
    y : array
        Kernel output (any float dtype, host or CuPy).
    ref : ndarray
        Float64 reference output.
    scale : ndarray
        ``|W| * |X| + |b|`` in float64 (the error scale).
    dtype : str
        Dtype of the computation, for the unit roundoff.
    """
    y = to_host(y)
    y64 = np.asarray(y, dtype=np.float64)
    if y64.shape != ref.shape:
        raise ValueError(f"output shape {y64.shape} != reference shape {ref.shape}")
    finite = np.isfinite(y64)
    nonfinite = int(y64.size - np.count_nonzero(finite))
    if nonfinite:
        inf = float("inf")
        return {"rel_l2": inf, "max_abs": inf, "max_rel": inf, "bound_ratio": inf,
                "nonfinite": nonfinite}
    diff = np.abs(y64 - ref)
    ref_norm = float(np.linalg.norm(ref))
    ref_max = float(np.max(np.abs(ref))) if ref.size else 0.0
    floor = max(MAX_REL_FLOOR * ref_max, np.finfo(np.float64).tiny)
    u = UNIT_ROUNDOFF[dtype]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(scale > 0, diff / (u * scale), np.where(diff > 0, np.inf, 0.0))
    return {
        "rel_l2": float(np.linalg.norm(diff) / ref_norm) if ref_norm else float(np.max(diff)),
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_rel": float(np.max(diff / np.maximum(np.abs(ref), floor))) if diff.size else 0.0,
        "bound_ratio": float(bound.max()) if bound.size else 0.0,
        "nonfinite": 0,
    }


class ReferenceCache:
    """Float64 reference and error scale per (problem, seed), computed once a sweep.

    Several kernels are checked against the same inputs, and the reference
    of a large layer costs more than any kernel.
    """

    def __init__(self) -> None:
        self._key: tuple[ConvProblem, int, str] | None = None
        self._value: tuple[np.ndarray, np.ndarray] | None = None

    def get(self, p: ConvProblem, seed: int, x: Any, w: Any, b: Any,
            fill: str = "random") -> tuple[np.ndarray, np.ndarray]:
        if self._key != (p, seed, fill):
            self._value = (reference_for(p, x, w, b), reference_for(p, x, w, b, absolute=True))
            self._key = (p, seed, fill)
        assert self._value is not None
        return self._value
