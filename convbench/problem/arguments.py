"""Input validation at the public boundary.

Everything a user passes to :func:`convbench.conv2d` or
:func:`convbench.reference` goes through :func:`problem_from_arrays` once;
kernels then trust their arguments (C-contiguous, native byte order, matching
float dtypes, consistent shapes), so that no user ever sees a Numba typing
error.
"""

from __future__ import annotations

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
