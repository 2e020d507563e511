"""Helpers for users' own tests: is a convolution output right, given its algorithm?

:func:`assert_conv_close` computes the float64 reference and holds the output
to the algorithm's error envelope, the same one ``convbench check`` uses
(:func:`convbench.measure.compare.envelope`): a bound on every element's
error that a correct kernel exceeds with probability below one in a
million, whatever the machine's summation order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbench.contract import ErrorModel
from convbench.measure.compare import envelope
from convbench.measure.metrics import reference_and_scales
from convbench.problem.arguments import problem_from_arrays, to_host

#: The error-model family of each built-in algorithm name.
FAMILY_OF = {"direct": "direct", "im2col": "direct", "onednn": "direct",
             "numpy_im2col": "direct", "winograd": "winograd", "fft": "fft"}


def assert_conv_close(y: Any, x: Any, w: Any, bias: Any = None, *, stride: Any = 1,
                      padding: Any = 0, dilation: Any = 1, groups: int = 1,
                      algo: str | ErrorModel = "direct", factor: float = 1.0) -> None:
    """Assert that ``y`` is ``conv2d(x, w, bias, ...)`` within ``algo``'s error envelope.

    Parameters
    ----------
    y : array
        The output under test (NumPy or CuPy), shape (N, K, P, Q).
    x, w, bias, stride, padding, dilation, groups
        The convolution's arguments, as for :func:`convbench.conv2d`.
    algo : str or ErrorModel
        The algorithm that produced ``y``: ``"direct"``, ``"im2col"``,
        ``"winograd"``, ``"fft"``; other names get the loosest envelope
        (family ``"any"``). An :class:`~convbench.ErrorModel` says exactly
        (e.g. TF32 operands: ``ErrorModel("direct", 2**-11)``).
    factor : float
        Multiplies the envelope (> 1 loosens it).

    Raises
    ------
    AssertionError
        Naming the worst element, its index, the reference value, the bound,
        and how many elements exceed it. Also on shape mismatch and on
        non-finite values where the reference is finite (or vice versa).
    """
    p, x, w, bias = problem_from_arrays(x, w, bias, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups)
    model = algo if isinstance(algo, ErrorModel) else _model_of(algo, p)
    y64 = np.asarray(to_host(y), dtype=np.float64)
    if y64.shape != p.output_shape:
        raise AssertionError(f"output shape {y64.shape} != expected {p.output_shape} for {p}")
    reference = reference_and_scales(p, x, w, bias)
    ref = reference.ref
    finite_y, finite_ref = np.isfinite(y64), np.isfinite(ref)
    if not np.array_equal(finite_y, finite_ref):
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(finite_y != finite_ref),
                                                     y64.shape))
        raise AssertionError(
            f"non-finite values differ from the reference: y{list(idx)} = {float(y64[idx])}, "
            f"reference {float(ref[idx])} ({int(np.sum(finite_y != finite_ref))} elements differ)")
    with np.errstate(invalid="ignore"):
        tol = factor * np.where(finite_ref, envelope(p, reference, model), 0.0)
    diff = np.where(finite_ref, np.abs(y64 - ref), 0.0)
    excess = diff - tol
    if np.all(excess <= 0):
        return
    worst = int(np.argmax(excess / np.maximum(tol, np.finfo(float).tiny)))
    idx = tuple(int(i) for i in np.unravel_index(worst, y64.shape))
    n_bad = int(np.count_nonzero(excess > 0))
    name = algo if isinstance(algo, str) else f"{model.family} family"
    raise AssertionError(
        f"conv output exceeds the {name} error envelope at {n_bad} of {y64.size} elements; "
        f"worst y{list(idx)} = {float(y64[idx]):.9g}, reference {float(ref[idx]):.9g}, "
        f"|diff| {diff[idx]:.3e} > bound {tol[idx]:.3e} (n = {p.reduction_length}, dtype "
        f"{p.dtype}, |W|*|X| = {reference.abs_scale[idx]:.3e}) for problem {p}")


def _model_of(algo: str, p: Any) -> ErrorModel:
    """The error model of an algorithm name: its family, or a registered kernel's own
    model (a Winograd tile's transforms), else the loosest."""
    if algo in FAMILY_OF:
        return ErrorModel(FAMILY_OF[algo])
    from convbench.registry import get_kernel  # noqa: PLC0415 -- the registry imports kernels

    try:
        return get_kernel(algo, "cpu").error_model(p)
    except ValueError:
        return ErrorModel("any")
