"""The GEMM precisions of the GPU kernels, and the one GEMM call they make.

Every GEMM a GPU kernel runs is ``out[i] = a[i] @ b[i]`` over a batch of
row-major matrices (:meth:`Runtime.matmul`), in one of four *compute*
precisions chosen per call, never by a global switch:

``"fp32"``
    float32 (or complex64) operands, products and sums in float32, no tensor
    cores: cuBLAS ``CUBLAS_COMPUTE_32F_PEDANTIC``, which also ignores a handle
    math mode that would allow TF32.
``"tf32"``
    float32 operands rounded to TF32 (10 explicit significand bits) on the
    tensor cores, float32 accumulation: ``CUBLAS_COMPUTE_32F_FAST_TF32``.
``"fp16"``
    float16 operands on the tensor cores, products exact and sums in float32:
    ``CUBLAS_COMPUTE_32F`` with ``CUDA_R_16F`` inputs; the output may be
    float32 or float16 (rounded once, after the sum).
``"fp64"``
    float64 (or complex128) throughout: ``CUBLAS_COMPUTE_64F``.

:func:`check_matmul` validates the operands once for both runtimes, so the
host emulator refuses exactly what cuBLAS would be handed wrongly.
:func:`emulate_operand` is how the emulator reproduces each precision in
NumPy: TF32 operands are rounded to nearest (ties away from zero, PTX's
``cvt.rna.tf32.f32``), float16 operands are widened exactly to float32, and
the product is a float32 (or float64) matmul.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The compute precisions of :meth:`Runtime.matmul`.
GEMM_COMPUTES = ("fp32", "tf32", "fp16", "fp64")

#: Operand dtypes each compute precision accepts.
OPERAND_DTYPES = {
    "fp32": (np.dtype(np.float32), np.dtype(np.complex64)),
    "tf32": (np.dtype(np.float32), np.dtype(np.complex64)),
    "fp16": (np.dtype(np.float16),),
    "fp64": (np.dtype(np.float64), np.dtype(np.complex128)),
}

#: Output dtypes each operand dtype may produce.
OUTPUT_DTYPES = {
    np.dtype(np.float16): (np.dtype(np.float16), np.dtype(np.float32)),
    np.dtype(np.float32): (np.dtype(np.float32),),
    np.dtype(np.complex64): (np.dtype(np.complex64),),
    np.dtype(np.float64): (np.dtype(np.float64),),
    np.dtype(np.complex128): (np.dtype(np.complex128),),
}

#: How each compute precision multiplies, for records.
GEMM_DESCRIPTION = {
    "fp32": "fp32 x fp32 -> fp32 (CUDA cores, no TF32)",
    "tf32": "tf32 x tf32 -> fp32 (tensor cores)",
    "fp16": "fp16 x fp16 -> fp32 (tensor cores)",
    "fp64": "fp64 x fp64 -> fp64",
}

#: Bits of a float32 significand that TF32 drops (23 stored, 10 kept).
TF32_DROPPED_BITS = 13


def gemm_compute(math: str, operand_dtype: Any) -> str:
    """The compute precision of a GEMM on ``operand_dtype`` data in math mode ``math``.

    float16 operands always multiply as ``"fp16"`` and float64 as ``"fp64"``;
    float32 (or complex64) operands multiply as ``"tf32"`` in the ``tf32``
    mode and strictly otherwise.
    """
    dt = np.dtype(operand_dtype)
    if dt == np.float16:
        return "fp16"
    if dt in (np.dtype(np.float64), np.dtype(np.complex128)):
        return "fp64"
    return "tf32" if math == "tf32" else "fp32"


def round_to_tf32(a: np.ndarray) -> np.ndarray:
    """float32 (or complex64) values rounded to TF32: nearest, ties away from zero.

    The result is float32 (complex64) with the low 13 significand bits clear.
    Infinities and NaNs are returned unchanged.
    """
    if np.iscomplexobj(a):
        out = np.empty(a.shape, np.complex64)
        out.real = round_to_tf32(np.ascontiguousarray(a.real, np.float32))
        out.imag = round_to_tf32(np.ascontiguousarray(a.imag, np.float32))
        return out
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    half = np.uint32(1 << (TF32_DROPPED_BITS - 1))
    mask = np.uint32(~((1 << TF32_DROPPED_BITS) - 1) & 0xFFFFFFFF)
    exponent = np.uint32(0x7F800000)
    finite = (bits & exponent) != exponent
    rounded = np.where(finite, (bits + half) & mask, bits)
    return rounded.astype(np.uint32).view(np.float32).reshape(np.shape(a))


def emulate_operand(a: np.ndarray, compute: str) -> np.ndarray:
    """``a`` as the tensor cores (or CUDA cores) see it under ``compute``, for NumPy's matmul."""
    if compute == "tf32":
        return round_to_tf32(a)
    if compute == "fp16":
        return a.astype(np.float32)
    return a


def _leading_dim(a: Any, axis: int) -> int:
    """Elements between rows (axis 1) or batch items (axis 0); a size-1 axis may have any."""
    itemsize = a.dtype.itemsize
    stride = a.strides[axis]
    if stride % itemsize:
        raise ValueError(f"matmul: stride {stride} of axis {axis} is not a whole element")
    return stride // itemsize


def matmul_layout(a: Any) -> tuple[int, int]:
    """(leading dimension, batch stride) in elements of a 3-D operand with unit column stride.

    A size-1 row axis gets the column count as leading dimension (BLAS wants
    ``ld >= cols``); a size-1 batch axis gets batch stride 0.
    """
    rows, cols = a.shape[1], a.shape[2]
    ld = _leading_dim(a, 1) if rows > 1 else cols
    batch = _leading_dim(a, 0) if a.shape[0] > 1 else 0
    return max(ld, cols, 1), batch


def check_matmul(a: Any, b: Any, out: Any, compute: str) -> tuple[int, int, int, int]:
    """Validate ``out[i] = a[i] @ b[i]``; return (batch, m, n, k).

    Raises
    ------
    ValueError
        For an unknown compute precision, shapes that do not multiply, an
        operand whose last axis is not contiguous, a row stride below the
        column count, or an output that overlaps itself across the batch.
    TypeError
        For operand or output dtypes the compute precision does not take.
    """
    if compute not in GEMM_COMPUTES:
        raise ValueError(f"compute must be one of {GEMM_COMPUTES}, got {compute!r}")
    for name, arr in (("a", a), ("b", b), ("out", out)):
        if arr.ndim != 3:
            raise ValueError(f"matmul: {name} must be 3-D (batch, rows, cols), got {arr.shape}")
        if arr.shape[2] > 1 and arr.strides[2] != arr.dtype.itemsize:
            raise ValueError(f"matmul: {name}'s last axis must be contiguous, strides "
                             f"{arr.strides}")
        if arr.shape[1] > 1 and arr.strides[1] < arr.shape[2] * arr.dtype.itemsize:
            raise ValueError(f"matmul: {name}'s rows overlap (strides {arr.strides}, shape "
                             f"{arr.shape})")
    batch, m, k = a.shape
    if b.shape[0] != batch or b.shape[1] != k or out.shape != (batch, m, b.shape[2]):
        raise ValueError(f"matmul: shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    if a.dtype != b.dtype or a.dtype not in OPERAND_DTYPES[compute]:
        raise TypeError(f"matmul: compute {compute!r} takes {OPERAND_DTYPES[compute]} "
                        f"operands, got {a.dtype} and {b.dtype}")
    if out.dtype not in OUTPUT_DTYPES[a.dtype]:
        raise TypeError(f"matmul: {a.dtype} operands give {OUTPUT_DTYPES[a.dtype]}, "
                        f"got out of {out.dtype}")
    if batch > 1 and out.strides[0] < out.shape[1] * out.strides[1] and out.shape[1] > 1:
        raise ValueError(f"matmul: out's batch items overlap (strides {out.strides})")
    return batch, m, b.shape[2], k
