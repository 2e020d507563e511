"""Float64 reference convolution, kept apart from every kernel under test.

The reference is deliberately simple: zero-pad, then for each filter tap
``(r, s)`` add one matrix product over channels. That is R*S float64 BLAS
calls, exact up to float64 rounding, and it shares no code with the kernels.
The same loop on transformed operands gives the two scales the error model
uses (:mod:`convbench.measure.compare`): ``operands="absolute"`` computes
``|W| * |X| + |b|``, the classical worst-case dot-product scale, and
``operands="squared"`` computes ``W^2 * X^2 + b^2``, the sum of the squared
terms of each output (its square root is the root-sum-square of the terms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbench.problem.arguments import problem_from_arrays, to_host
from convbench.problem.conv_problem import ConvProblem


def _to_host_float64(a: Any) -> np.ndarray:
    return np.asarray(to_host(a), dtype=np.float64)


def zero_pad(p: ConvProblem, x: np.ndarray) -> np.ndarray:
    """Zero-padded copy of ``x`` covering exactly the rows/columns the output reads.

    Shape ``(N, C, padded_height, padded_width)``; negative bottom/right
    padding crops input rows/columns that no output reads.
    """
    (pt, pb), (pl, pr) = p.padding
    xpad = np.zeros((p.mb, p.ic, p.padded_height, p.padded_width), dtype=x.dtype)
    rows = min(p.ih, p.ih + pb)
    cols = min(p.iw, p.iw + pr)
    xpad[:, :, pt:pt + rows, pl:pl + cols] = x[:, :, :rows, :cols]
    return xpad


#: How :func:`reference_for` transforms the operands before convolving them.
OPERANDS = {"signed": lambda a: a, "absolute": np.abs, "squared": np.square}


def reference_for(p: ConvProblem, x: Any, w: Any, bias: Any = None, *,
                  absolute: bool = False, operands: str = "signed") -> np.ndarray:
    """Float64 convolution of arrays already described by ``p``.

    Parameters
    ----------
    p : ConvProblem
    x, w, bias : arrays of the shapes ``p`` names (any float dtype; cast up)
    absolute : bool
        Shorthand for ``operands="absolute"``.
    operands : {"signed", "absolute", "squared"}
        Convolve the operands as they are, their absolute values
        (``|W| * |X| + |b|``) or their squares (``W^2 * X^2 + b^2``).

    Returns
    -------
    numpy.ndarray, float64, shape ``p.output_shape``
    """
    if absolute:
        operands = "absolute"
    if operands not in OPERANDS:
        raise ValueError(f"operands must be one of {list(OPERANDS)}, got {operands!r}")
    transform = OPERANDS[operands]
    x64 = transform(_to_host_float64(x))
    w64 = transform(_to_host_float64(w))
    b64 = None if bias is None else transform(_to_host_float64(bias))
    g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
    xpad = zero_pad(p, x64)
    y = np.zeros((p.mb, g, kg, p.oh * p.ow), dtype=np.float64)
    row_stop = (p.oh - 1) * p.sh + 1
    col_stop = (p.ow - 1) * p.sw + 1
    for r in range(p.kh):
        for s in range(p.kw):
            r0, s0 = r * p.dil_h, s * p.dil_w
            patch = xpad[:, :, r0:r0 + row_stop:p.sh, s0:s0 + col_stop:p.sw]
            patch = patch.reshape(p.mb, g, cg, p.oh * p.ow)
            y += np.matmul(w64[:, :, r, s].reshape(g, kg, cg), patch)
    y = y.reshape(p.output_shape)
    if b64 is not None:
        y += b64[None, :, None, None]
    return y


def reference(x: Any, w: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0,
              dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """Float64 reference 2-D convolution (cross-correlation), PyTorch semantics.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    w : array, shape (K, C/groups, R, S)
    bias : array, shape (K,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), "same" or "valid"
    groups : int

    Returns
    -------
    numpy.ndarray
        float64 output of shape (N, K, P, Q), whatever the input dtype.

    Examples
    --------
    >>> import numpy as np, convbench
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> convbench.reference(x, np.ones((1, 1, 2, 2)))[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    p, x, w, bias = problem_from_arrays(x, w, bias, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups)
    return reference_for(p, x, w, bias)
