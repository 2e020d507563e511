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
from convbench.measure.compare import envelope, reduction_length
from convbench.measure.metrics import Reference, reference_and_scales
from convbench.problem import ConvProblem, normalize_direction
from convbench.problem.arguments import (
    problem_for_backward_data,
    problem_for_backward_weights,
    problem_from_arrays,
    to_host,
)

#: The error-model family of each built-in algorithm name.
FAMILY_OF = {"direct": "direct", "im2col": "direct", "onednn": "direct",
             "numpy_im2col": "direct", "winograd": "winograd", "fft": "fft"}


def assert_conv_close(y: Any, x: Any, w: Any, bias: Any = None, *, stride: Any = 1,
                      padding: Any = 0, dilation: Any = 1, groups: int = 1,
                      algo: str | ErrorModel = "direct", factor: float = 1.0,
                      dir: str = "fwd", shape: Any = None) -> None:
    """Assert that ``y`` is ``conv2d(x, w, bias, ...)`` (or its gradient) within ``algo``'s
    error envelope.

    Parameters
    ----------
    y : array
        The output under test (NumPy or CuPy): for ``dir="fwd"`` ``y`` of shape
        (N, K, P, Q); for ``"bwd_d"`` ``dx``; for ``"bwd_w"`` ``dw``; for
        ``"bwd_wb"`` the pair ``(dw, db)``.
    x, w, bias, stride, padding, dilation, groups
        The convolution's arguments, as for :func:`convbench.conv2d`. In the
        backward directions ``x, w`` are the direction's operands in
        ``torch.nn.grad``'s order: ``(dy, w)`` for ``bwd_d``, ``(x, dy)`` for
        ``bwd_w``/``bwd_wb``, and ``bias`` is not taken.
    dir : {"fwd", "bwd_d", "bwd_w", "bwd_wb"}
        Which convolution ``y`` is (benchdnn's names are taken too).
    shape : sequence of 4 ints, optional
        The shape the gradient has: ``x_shape`` for ``bwd_d``, ``w_shape`` for
        ``bwd_w``/``bwd_wb`` (default: ``y``'s, or ``dw``'s, own shape).
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
    direction = normalize_direction(dir)
    if direction != "fwd":
        _assert_gradient_close(y, x, w, bias, direction, shape, factor, algo,
                               stride=stride, padding=padding, dilation=dilation, groups=groups)
        return
    p, x, w, bias = problem_from_arrays(x, w, bias, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups)
    _assert_within(y, p, reference_and_scales(p, x, w, bias), _model_of(algo, p), factor,
                   algo, "conv output")


def _assert_gradient_close(y: Any, a: Any, b: Any, bias: Any, direction: str, shape: Any,
                           factor: float, algo: Any, **params: Any) -> None:
    """:func:`assert_conv_close` for a backward direction."""
    if bias is not None:
        raise TypeError(f"assert_conv_close(dir={direction!r}) takes no bias, got one")
    if direction == "bwd_d":
        default = getattr(y, "shape", None)
        p, a, b = problem_for_backward_data(a, b, shape if shape is not None else default,
                                            **params)
        _assert_within(y, p, reference_and_scales(p, a, b, None), _model_of(algo, p), factor,
                       algo, "dx")
        return
    outputs = tuple(y) if direction == "bwd_wb" else (y,)
    if direction == "bwd_wb" and len(outputs) != 2:
        raise AssertionError(f"bwd_wb output must be the pair (dw, db), got {len(outputs)} "
                             "arrays")
    default = getattr(outputs[0], "shape", None)
    p, a, b = problem_for_backward_weights(a, b, shape if shape is not None else default,
                                           bias_grad=direction == "bwd_wb", **params)
    model = _model_of(algo, p)
    references = reference_and_scales(p, a, b, None)
    if direction == "bwd_w":
        _assert_within(y, p, references, model, factor, algo, "dw")
        return
    _assert_within(outputs[0], p, references[0], model, factor, algo, "dw")
    _assert_within(outputs[1], p, references[1], ErrorModel("direct", model.operand_roundoff),
                   factor, algo, "db")


def _assert_within(y: Any, p: ConvProblem, reference: Reference, model: ErrorModel,
                   factor: float, algo: Any, what: str) -> None:
    """Raise ``AssertionError`` where ``y`` leaves its envelope around ``reference``."""
    y64 = np.asarray(to_host(y), dtype=np.float64)
    ref = reference.ref
    if y64.shape != ref.shape:
        raise AssertionError(f"{what} shape {y64.shape} != expected {ref.shape} for {p}")
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
        f"{what} exceeds the {name} error envelope at {n_bad} of {y64.size} elements; "
        f"worst y{list(idx)} = {float(y64[idx]):.9g}, reference {float(ref[idx]):.9g}, "
        f"|diff| {diff[idx]:.3e} > bound {tol[idx]:.3e} (n = {reduction_length(p)}, dtype "
        f"{p.dtype}, |W|*|X| = {reference.abs_scale[idx]:.3e}) for problem {p}")


def _model_of(algo: str | ErrorModel, p: Any) -> ErrorModel:
    """The error model of an algorithm name: its family, or a registered kernel's own
    model (a Winograd tile's transforms), else the loosest; an ErrorModel as given."""
    if isinstance(algo, ErrorModel):
        return algo
    if algo in FAMILY_OF:
        return ErrorModel(FAMILY_OF[algo])
    from convbench.registry import get_kernel  # noqa: PLC0415 -- the registry imports kernels

    try:
        return get_kernel(algo, "cpu").error_model(p)
    except ValueError:
        return ErrorModel("any")
