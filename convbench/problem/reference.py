"""Float64 reference convolution in every direction, kept apart from every kernel under test.

The reference is deliberately simple: zero-pad, then for each filter tap
``(r, s)`` add one matrix product over channels. That is R*S float64 BLAS
calls, exact up to float64 rounding, and it shares no code with the kernels.
The backward directions are the same tap loop read the other way round:

* ``bwd_d``: for each tap, ``W[:, :, r, s]^T dY`` is *scattered* (added)
  into the strided window of a zero-padded ``dX`` that the forward's tap
  reads, and the padding is cropped off: the adjoint of the forward, written
  as the forward's own slicing so that it has nothing in common with the
  kernels' gathers;
* ``bwd_w``: for each tap, ``dW[:, :, r, s] = dY X_window^T`` summed over the
  images and output pixels, one matrix product of length ``N*P*Q``;
* ``bwd_wb``: that and ``db = sum dY`` over images and pixels.

The same loop on transformed operands gives the two scales the error model
uses (:mod:`convbench.measure.compare`): ``operands="absolute"`` computes
``|W| * |X| + |b|``, the classical worst-case dot-product scale, and
``operands="squared"`` computes ``W^2 * X^2 + b^2``, the sum of the squared
terms of each output (its square root is the root-sum-square of the terms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convbench.problem.arguments import (
    problem_for_backward_data,
    problem_for_backward_weights,
    problem_from_arrays,
    to_host,
)
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
                  absolute: bool = False, operands: str = "signed") -> Any:
    """Float64 convolution of ``p``'s direction on arrays already described by ``p``.

    The operands come in the order of ``torch.nn.grad``'s functions, as a
    kernel's ``prepare`` takes them:

    * ``fwd``: ``(x, w, bias)`` -> ``y``, shape ``p.output_shape``;
    * ``bwd_d``: ``(dy, w)`` -> ``dx``, shape ``p.input_shape``;
    * ``bwd_w``: ``(x, dy)`` -> ``dw``, shape ``p.weight_shape``;
    * ``bwd_wb``: ``(x, dy)`` -> ``(dw, db)``, ``db`` of shape ``(K,)``.

    Parameters
    ----------
    p : ConvProblem
    x, w, bias : arrays of the shapes ``p`` names (any float dtype; cast up)
        The direction's operands, as above (``bias`` only for ``fwd``).
    absolute : bool
        Shorthand for ``operands="absolute"``.
    operands : {"signed", "absolute", "squared"}
        Convolve the operands as they are, their absolute values
        (``|W| * |X| + |b|``) or their squares (``W^2 * X^2 + b^2``).

    Returns
    -------
    numpy.ndarray (float64), or a pair of them for ``bwd_wb``
    """
    if absolute:
        operands = "absolute"
    if operands not in OPERANDS:
        raise ValueError(f"operands must be one of {list(OPERANDS)}, got {operands!r}")
    transform = OPERANDS[operands]
    a64 = transform(_to_host_float64(x))
    b64 = transform(_to_host_float64(w))
    if p.dir == "bwd_d":
        return _backward_data(p, a64, b64)
    if p.dir in ("bwd_w", "bwd_wb"):
        dw = _backward_weights(p, a64, b64)
        return (dw, b64.sum(axis=(0, 2, 3))) if p.dir == "bwd_wb" else dw
    return _forward(p, a64, b64, None if bias is None else transform(_to_host_float64(bias)))


def _forward(p: ConvProblem, x64: np.ndarray, w64: np.ndarray,
             b64: np.ndarray | None) -> np.ndarray:
    """``y = W * X + b`` in float64: one matrix product per tap."""
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


def _backward_data(p: ConvProblem, dy64: np.ndarray, w64: np.ndarray) -> np.ndarray:
    """``dx``: each tap's ``W^T dY`` added into the window of the padded input it read."""
    g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
    grad = np.zeros((p.mb, p.ic, p.padded_height, p.padded_width), dtype=np.float64)
    dy = dy64.reshape(p.mb, g, kg, p.oh * p.ow)
    row_stop = (p.oh - 1) * p.sh + 1
    col_stop = (p.ow - 1) * p.sw + 1
    for r in range(p.kh):
        for s in range(p.kw):
            r0, s0 = r * p.dil_h, s * p.dil_w
            wt = w64[:, :, r, s].reshape(g, kg, cg).transpose(0, 2, 1)
            taps = np.matmul(wt, dy).reshape(p.mb, p.ic, p.oh, p.ow)
            grad[:, :, r0:r0 + row_stop:p.sh, s0:s0 + col_stop:p.sw] += taps
    (pt, pb), (pl, pr) = p.padding
    dx = np.zeros(p.input_shape, dtype=np.float64)
    rows = min(p.ih, p.ih + pb)  # input rows past the last window get no gradient
    cols = min(p.iw, p.iw + pr)
    dx[:, :, :rows, :cols] = grad[:, :, pt:pt + rows, pl:pl + cols]
    return dx


def _backward_weights(p: ConvProblem, x64: np.ndarray, dy64: np.ndarray) -> np.ndarray:
    """``dw``: per tap, ``dY`` times the input window it read, summed over N, P, Q."""
    g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
    length = p.mb * p.oh * p.ow
    xpad = zero_pad(p, x64)
    dy = dy64.reshape(p.mb, g, kg, p.oh * p.ow).transpose(1, 2, 0, 3).reshape(g, kg, length)
    dw = np.zeros(p.weight_shape, dtype=np.float64)
    row_stop = (p.oh - 1) * p.sh + 1
    col_stop = (p.ow - 1) * p.sw + 1
    for r in range(p.kh):
        for s in range(p.kw):
            r0, s0 = r * p.dil_h, s * p.dil_w
            patch = xpad[:, :, r0:r0 + row_stop:p.sh, s0:s0 + col_stop:p.sw]
            patch = patch.reshape(p.mb, g, cg, p.oh * p.ow).transpose(1, 0, 3, 2)
            dw[:, :, r, s] = np.matmul(dy, patch.reshape(g, length, cg)).reshape(p.oc, cg)
    return dw


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


def reference_backward_data(dy: Any, w: Any, x_shape: Any, *, stride: Any = 1,
                            padding: Any = 0, dilation: Any = 1,
                            groups: int = 1) -> np.ndarray:
    """Float64 gradient of the input, ``torch.nn.grad.conv2d_input``'s semantics.

    Parameters
    ----------
    dy : array, shape (N, K, P, Q)
        Gradient of the output.
    w : array, shape (K, C/groups, R, S)
    x_shape : sequence of 4 ints
        The input's shape (N, C, H, W); it settles ``H`` and ``W`` where a
        stride leaves a remainder (as torch's ``output_padding`` does).
    stride, padding, dilation, groups
        As for :func:`reference`.

    Returns
    -------
    numpy.ndarray, float64, shape ``x_shape``

    Examples
    --------
    >>> import numpy as np, convbench
    >>> dy = np.ones((1, 1, 2, 2))
    >>> convbench.reference_backward_data(dy, np.ones((1, 1, 2, 2)), (1, 1, 3, 3))[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    p, dy, w = problem_for_backward_data(dy, w, x_shape, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups)
    return reference_for(p, dy, w)


def reference_backward_weights(x: Any, dy: Any, w_shape: Any, *, stride: Any = 1,
                               padding: Any = 0, dilation: Any = 1, groups: int = 1,
                               bias_grad: bool = False) -> Any:
    """Float64 gradient of the weights, ``torch.nn.grad.conv2d_weight``'s semantics.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    dy : array, shape (N, K, P, Q)
    w_shape : sequence of 4 ints
        The weights' shape (K, C/groups, R, S).
    stride, padding, dilation, groups
        As for :func:`reference`.
    bias_grad : bool
        Also return the bias gradient ``db = dy.sum((0, 2, 3))``.

    Returns
    -------
    numpy.ndarray, float64, shape ``w_shape``; ``(dw, db)`` with ``bias_grad``

    Examples
    --------
    >>> import numpy as np, convbench
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> convbench.reference_backward_weights(x, np.ones((1, 1, 2, 2)), (1, 1, 2, 2))[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    p, x, dy = problem_for_backward_weights(x, dy, w_shape, stride=stride, padding=padding,
                                            dilation=dilation, groups=groups,
                                            bias_grad=bias_grad)
    return reference_for(p, x, dy)
