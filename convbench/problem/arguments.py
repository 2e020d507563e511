"""Input validation at the public boundary.

Everything a user passes to :func:`convbench.conv2d` or
:func:`convbench.reference` goes through :func:`problem_from_arrays` once;
kernels then trust their arguments (C-contiguous, native byte order, matching
float dtypes, consistent shapes), so that no user ever sees a Numba typing
error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from convbench.problem.conv_problem import ConvProblem

_FLOAT_DTYPES = ("float16", "float32", "float64")


def _as_array(a: Any, what: str) -> Any:
    """Return ``a`` as a NumPy or CuPy array, without copying when possible."""
    if hasattr(a, "__cuda_array_interface__"):
        return a  # CuPy (or another CUDA array): validated by shape and dtype below
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except Exception as exc:  # noqa: BLE001 -- re-raised with context
        raise TypeError(f"{what} must be an array, got {type(a).__name__}: {exc}") from None


def _check_dtype(a: Any, what: str) -> np.dtype:
    dtype = np.dtype(a.dtype)
    if dtype.name not in _FLOAT_DTYPES:
        raise TypeError(f"{what} must have a floating dtype (float16, float32 or float64), "
                        f"got {dtype.name}; cast it, e.g. {what}.astype(np.float32)")
    return dtype


def _native_contiguous(a: Any) -> Any:
    """C-contiguous, native-endian version of ``a`` (a copy only when needed).

    Read-only arrays are fine: kernels never write their inputs.
    """
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a, dtype=np.dtype(a.dtype.name))
    xp = array_module(a)
    return xp.ascontiguousarray(a)


def array_module(a: Any) -> Any:
    """NumPy for host arrays, CuPy for CUDA arrays."""
    if hasattr(a, "__cuda_array_interface__"):
        import cupy  # noqa: PLC0415 -- only reached with a CuPy array in hand

        return cupy
    return np


def problem_from_arrays(x: Any, w: Any, bias: Any = None, *, stride: Any = 1,
                        padding: Any = 0, dilation: Any = 1, groups: int = 1,
                        name: str = "") -> tuple[ConvProblem, Any, Any, Any]:
    """Validate convolution arguments and describe them as a :class:`ConvProblem`.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    w : array, shape (K, C/groups, R, S)
    bias : array, shape (K,), or None
    stride, padding, dilation, groups
        As in :func:`torch.nn.functional.conv2d`; ``padding`` also takes
        ``"same"`` and ``"valid"``.
    name : str
        Name recorded in the problem.

    Returns
    -------
    problem : ConvProblem
    x, w, bias : arrays
        C-contiguous, native byte order (copies only where needed).

    Raises
    ------
    TypeError
        Non-float or mismatched dtypes, arrays on different devices.
    ValueError
        Wrong ranks, channel mismatch, groups that do not divide C or K,
        bias of the wrong shape, non-positive output size.
    """
    x = _as_array(x, "x")
    w = _as_array(w, "w")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"w must be 4-D (K, C/groups, R, S), got shape {tuple(w.shape)}")
    xdt, wdt = _check_dtype(x, "x"), _check_dtype(w, "w")
    if xdt.name != wdt.name:  # by name: byte order is normalized below
        raise TypeError(f"x and w must have the same dtype, got x {xdt.name} and w {wdt.name}")
    if array_module(x) is not array_module(w):
        raise TypeError("x and w must both be NumPy arrays or both CuPy arrays")
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    n, c, h, width = (int(d) for d in x.shape)
    k, cg, r, s = (int(d) for d in w.shape)
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels C={c}")
    if k % groups:
        raise ValueError(f"groups={groups} must divide the output channels K={k} (w.shape[0])")
    if cg * groups != c:
        raise ValueError(f"channel mismatch: x has C={c} channels, so w.shape[1] must be "
                         f"C/groups={c // groups}, got w.shape={tuple(w.shape)}")
    if min(h, width, r, s, c, k) < 1:
        raise ValueError(f"empty dimension: x.shape={tuple(x.shape)}, w.shape={tuple(w.shape)}")
    if bias is not None:
        bias = _as_array(bias, "bias")
        if tuple(bias.shape) != (k,):
            raise ValueError(f"bias must have shape (K,) = ({k},), got {tuple(bias.shape)}")
        bdt = _check_dtype(bias, "bias")
        if bdt.name != xdt.name:
            raise TypeError(f"bias must have the dtype of x ({xdt.name}), got {bdt.name}")
        if array_module(bias) is not array_module(x):
            raise TypeError("bias must live where x does (both NumPy or both CuPy)")
        bias = _native_contiguous(bias)
    problem = ConvProblem.make(n, c, h, width, k, r, s, stride=stride, padding=padding,
                               dilation=dilation, groups=int(groups), bias=bias is not None,
                               dtype=xdt.name, name=name)
    return problem, _native_contiguous(x), _native_contiguous(w), bias


def _shape4(shape: Any, what: str, names: str) -> tuple[int, int, int, int]:
    """``shape`` as four positive ints, or a ``TypeError``/``ValueError`` naming it."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of 4 ints {names}, got {shape!r}") from None
    if len(dims) != 4 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                 for d in dims):
        raise TypeError(f"{what} must be a sequence of 4 ints {names}, got {shape!r}")
    dims = tuple(int(d) for d in dims)
    if min(dims[1:]) < 1 or dims[0] < 0:
        raise ValueError(f"{what} must be positive {names}, got {dims}")
    return dims  # type: ignore[return-value]


def _matching(a: Any, b: Any, names: tuple[str, str]) -> str:
    """The common float dtype of ``a`` and ``b``, checked as :func:`problem_from_arrays` does."""
    adt, bdt = _check_dtype(a, names[0]), _check_dtype(b, names[1])
    if adt.name != bdt.name:
        raise TypeError(f"{names[0]} and {names[1]} must have the same dtype, got "
                        f"{names[0]} {adt.name} and {names[1]} {bdt.name}")
    if array_module(a) is not array_module(b):
        raise TypeError(f"{names[0]} and {names[1]} must both be NumPy arrays or both CuPy "
                        "arrays")
    return adt.name


def _backward_problem(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                      dy_shape: tuple[int, ...], dtype: str, direction: str, *,
                      stride: Any, padding: Any, dilation: Any, groups: Any) -> ConvProblem:
    """The problem of a backward direction, once ``dy``'s shape has been checked against it."""
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    n, c, h, width = x_shape
    k, cg, r, s = w_shape
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels C={c}")
    if k % groups:
        raise ValueError(f"groups={groups} must divide the output channels K={k}")
    if cg * groups != c:
        raise ValueError(f"channel mismatch: the input has C={c} channels, so the weights' "
                         f"shape[1] must be C/groups={c // groups}, got weights of shape "
                         f"{tuple(w_shape)}")
    p = ConvProblem.make(n, c, h, width, k, r, s, stride=stride, padding=padding,
                         dilation=dilation, groups=int(groups), dtype=dtype,
                         bias=direction == "bwd_wb")
    if tuple(dy_shape) != p.output_shape:
        raise ValueError(
            f"dy must have shape (N, K, P, Q) = {p.output_shape} for an input of shape "
            f"{tuple(x_shape)} and weights of shape {tuple(w_shape)} with stride {p.stride}, "
            f"padding {p.padding}, dilation {p.dilation}, got {tuple(dy_shape)}")
    return replace(p, dir=direction)


def problem_for_backward_data(dy: Any, w: Any, x_shape: Any, *, stride: Any = 1,
                              padding: Any = 0, dilation: Any = 1,
                              groups: int = 1) -> tuple[ConvProblem, Any, Any]:
    """Validate ``conv2d_backward_data``'s arguments; its ``bwd_d`` problem and arrays.

    ``x_shape`` is the input's shape (N, C, H, W): where the stride leaves a
    remainder several input sizes give ``dy``'s size, and ``x_shape`` says
    which (torch's ``output_padding``).

    Returns
    -------
    problem : ConvProblem
        With ``dir="bwd_d"``.
    dy, w : arrays
        C-contiguous, native byte order.

    Raises
    ------
    TypeError
        Non-float or mismatched dtypes, arrays on different devices, an
        ``x_shape`` that is not 4 ints.
    ValueError
        Wrong ranks, channel mismatch, groups that do not divide C or K, or a
        ``dy`` whose shape is not the output shape of ``x_shape`` under the
        parameters (the message gives both).
    """
    dy, w = _as_array(dy, "dy"), _as_array(w, "w")
    if dy.ndim != 4:
        raise ValueError(f"dy must be 4-D (N, K, P, Q), got shape {tuple(dy.shape)}")
    if w.ndim != 4:
        raise ValueError(f"w must be 4-D (K, C/groups, R, S), got shape {tuple(w.shape)}")
    dtype = _matching(dy, w, ("dy", "w"))
    x_shape = _shape4(x_shape, "x_shape", "(N, C, H, W)")
    w_shape = tuple(int(d) for d in w.shape)
    if min(w_shape) < 1:
        raise ValueError(f"empty dimension: w.shape={w_shape}")
    if int(dy.shape[1]) != w_shape[0]:
        raise ValueError(f"dy must have K = w.shape[0] = {w_shape[0]} channels, got "
                         f"dy.shape={tuple(dy.shape)}")
    if int(dy.shape[0]) != x_shape[0]:
        raise ValueError(f"dy must have the batch of x_shape, N = {x_shape[0]}, got "
                         f"dy.shape={tuple(dy.shape)}")
    p = _backward_problem(x_shape, w_shape, tuple(int(d) for d in dy.shape), dtype, "bwd_d",
                          stride=stride, padding=padding, dilation=dilation, groups=groups)
    return p, _native_contiguous(dy), _native_contiguous(w)


def problem_for_backward_weights(x: Any, dy: Any, w_shape: Any, *, stride: Any = 1,
                                 padding: Any = 0, dilation: Any = 1, groups: int = 1,
                                 bias_grad: bool = False) -> tuple[ConvProblem, Any, Any]:
    """Validate ``conv2d_backward_weights``'s arguments; its ``bwd_w``/``bwd_wb`` problem.

    Returns
    -------
    problem : ConvProblem
        With ``dir="bwd_wb"`` if ``bias_grad``, else ``"bwd_w"``.
    x, dy : arrays
        C-contiguous, native byte order.

    Raises
    ------
    TypeError
        Non-float or mismatched dtypes, arrays on different devices, a
        ``w_shape`` that is not 4 ints.
    ValueError
        Wrong ranks, channel mismatch, groups that do not divide C or K, or a
        ``dy`` whose shape is not the output shape under the parameters.
    """
    x, dy = _as_array(x, "x"), _as_array(dy, "dy")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if dy.ndim != 4:
        raise ValueError(f"dy must be 4-D (N, K, P, Q), got shape {tuple(dy.shape)}")
    dtype = _matching(x, dy, ("x", "dy"))
    w_shape = _shape4(w_shape, "w_shape", "(K, C/groups, R, S)")
    x_shape = tuple(int(d) for d in x.shape)
    if min(x_shape[1:]) < 1 or min(w_shape) < 1:
        raise ValueError(f"empty dimension: x.shape={x_shape}, w_shape={w_shape}")
    if int(dy.shape[1]) != w_shape[0]:
        raise ValueError(f"dy must have K = w_shape[0] = {w_shape[0]} channels, got "
                         f"dy.shape={tuple(dy.shape)}")
    if int(dy.shape[0]) != x_shape[0]:
        raise ValueError(f"dy must have x's batch, N = {x_shape[0]}, got "
                         f"dy.shape={tuple(dy.shape)}")
    p = _backward_problem(x_shape, w_shape, tuple(int(d) for d in dy.shape), dtype,
                          "bwd_wb" if bias_grad else "bwd_w", stride=stride, padding=padding,
                          dilation=dilation, groups=groups)
    return p, _native_contiguous(x), _native_contiguous(dy)


def to_host(y: Any) -> Any:
    """A NumPy view or copy of a host, CuPy or torch (CPU or CUDA) array."""
    if hasattr(y, "detach") and hasattr(y, "cpu"):  # torch.Tensor
        return y.detach().cpu().numpy()
    if hasattr(y, "__cuda_array_interface__"):
        import cupy  # noqa: PLC0415 -- only reached with a device array in hand

        return cupy.asnumpy(y)
    return y


#: Byte alignment of the host buffers convbench allocates: one cache line, the width of
#: an AVX-512 vector, so that no aligned-layout vector load or store splits two lines.
BUFFER_ALIGNMENT = 64


def aligned_empty(shape: Any, dtype: Any, align: int = BUFFER_ALIGNMENT) -> np.ndarray:
    """An uninitialized C-contiguous array whose first element sits on an ``align``-byte
    boundary.

    NumPy's own allocations are 16-byte aligned; where an array starts inside
    a cache line then depends on whatever the process allocated before it,
    and so does the speed of a vectorized loop over it.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray, align: int = BUFFER_ALIGNMENT) -> np.ndarray:
    """``a`` copied into :func:`aligned_empty` storage (C order, same dtype)."""
    out = aligned_empty(a.shape, a.dtype, align)
    out[...] = a
    return out
