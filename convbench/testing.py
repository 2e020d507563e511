"""Helpers for users' own tests: is a convolution output right, given its algorithm?

:func:`assert_conv_close` computes the float64 reference and an element-wise
tolerance from the error model of the algorithm that produced the output::

    |y_i - ref_i| <= C_algo * u * sqrt(n) * s_i  +  u_out * |ref_i|

* ``n = C/g * R * S`` (+1 with bias) is the reduction length;
* ``u`` is the unit roundoff of the accumulation (float32 for float16 data);
  ``u_out`` that of the output dtype (its final rounding);
* ``s_i = (|W| * |X| + |b|)_i`` is the classical dot-product error scale.
  FFT mixes a whole tile, so its error does not shrink with a small local
  scale: it uses ``max(s_i, mean(s))`` and a constant that grows with
  ``log2`` of the FFT size;
* ``sqrt(n)``: rounding errors of random-sign data grow like a random walk.
  The worst case, ``n * u * s_i``, is ~sqrt(n) times looser and would let real
  bugs through (a 1e-3 error in a Winograd coefficient); the constants
  ``C_algo`` leave a 10-30x margin over the largest ``bound_ratio / sqrt(n)``
  the test grid observes, so a correct kernel does not fail.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbench.measure.compare import conv_tolerance
from convbench.problem.arguments import problem_from_arrays, to_host
from convbench.problem.reference import reference_for


def assert_conv_close(y: Any, x: Any, w: Any, bias: Any = None, *, stride: Any = 1,
                      padding: Any = 0, dilation: Any = 1, groups: int = 1,
                      algo: str = "direct", factor: float = 1.0) -> None:
    """Assert that ``y`` is ``conv2d(x, w, bias, ...)`` within ``algo``'s error model.

    Parameters
    ----------
    y : array
        The output under test (NumPy or CuPy), shape (N, K, P, Q).
    x, w, bias, stride, padding, dilation, groups
        The convolution's arguments, as for :func:`convbench.conv2d`.
    algo : str
        The algorithm that produced ``y``: ``"direct"``, ``"im2col"``,
        ``"winograd"``, ``"fft"`` (others use the direct-convolution model).
    factor : float
        Multiplies the tolerance (> 1 loosens it).

    Raises
    ------
    AssertionError
        Naming the worst element, its index, the reference value, the bound,
        and how many elements exceed it. Also on shape mismatch and on
        non-finite values where the reference is finite (or vice versa).
    """
    p, x, w, bias = problem_from_arrays(x, w, bias, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups)
    y64 = np.asarray(to_host(y), dtype=np.float64)
    if y64.shape != p.output_shape:
        raise AssertionError(f"output shape {y64.shape} != expected {p.output_shape} for {p}")
    ref = reference_for(p, x, w, bias)
    scale = reference_for(p, x, w, bias, absolute=True)
    finite_y, finite_ref = np.isfinite(y64), np.isfinite(ref)
    if not np.array_equal(finite_y, finite_ref):
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(finite_y != finite_ref),
                                                     y64.shape))
        raise AssertionError(
            f"non-finite values differ from the reference: y{list(idx)} = {float(y64[idx])}, "
            f"reference {float(ref[idx])} ({int(np.sum(finite_y != finite_ref))} elements differ)")
    tol = conv_tolerance(p, np.where(finite_ref, ref, 0.0), np.where(finite_ref, scale, 0.0),
                         algo, factor)
    diff = np.where(finite_ref, np.abs(y64 - ref), 0.0)
    excess = diff - tol
    if np.all(excess <= 0):
        return
    worst = int(np.argmax(excess / np.maximum(tol, np.finfo(float).tiny)))
    idx = tuple(int(i) for i in np.unravel_index(worst, y64.shape))
    n_bad = int(np.count_nonzero(excess > 0))
    raise AssertionError(
        f"conv output exceeds the {algo} error model at {n_bad} of {y64.size} elements; "
        f"worst y{list(idx)} = {float(y64[idx]):.9g}, reference {float(ref[idx]):.9g}, "
        f"|diff| {diff[idx]:.3e} > "
        f"bound {tol[idx]:.3e} (n = {p.reduction_length}, dtype {p.dtype}, "
        f"|W|*|X| = {scale[idx]:.3e}) for problem {p}")
