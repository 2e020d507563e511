"""The GEMM precisions of the GPU kernels, as the host emulator computes them."""

import numpy as np
import pytest

from convbench.kernels.gpu.gemm import (
    GEMM_COMPUTES,
    check_matmul,
    gemm_compute,
    matmul_layout,
    round_to_tf32,
)
from convbench.kernels.gpu.runtime import HostRuntime

RUNTIME = HostRuntime()


def test_tf32_keeps_ten_significand_bits_rounding_to_nearest():
    one_ulp = np.float32(2.0**-10)
    x = np.array([1 + one_ulp / 2 - 2**-23, 1 + one_ulp / 2, 1 + one_ulp * 1.5, -3.0,
                  np.inf, -np.inf], np.float32)
    got = round_to_tf32(x)
    np.testing.assert_array_equal(got, np.array([1, 1 + one_ulp, 1 + 2 * one_ulp, -3.0,
                                                 np.inf, -np.inf], np.float32))
    assert (got.view(np.uint32) & 0x1FFF == 0).all()
    assert np.isnan(round_to_tf32(np.array([np.nan], np.float32)))[0]
    rng = np.random.default_rng(0)
    values = rng.standard_normal(10000).astype(np.float32)
    rel = np.abs(round_to_tf32(values) - values) / np.abs(values)
    assert rel.max() <= 2.0**-11 and rel.max() > 2.0**-12  # unit roundoff of TF32


def test_complex_operands_round_both_parts():
    z = np.array([1 + 2**-15 + 1j * (3 - 2**-14)], np.complex64)
    np.testing.assert_array_equal(round_to_tf32(z), np.array([1 + 3j], np.complex64))


@pytest.mark.parametrize("compute", GEMM_COMPUTES)
def test_emulated_matmul_is_numpy_matmul_of_the_rounded_operands(compute):
    dtype = {"fp32": np.float32, "tf32": np.float32, "fp16": np.float16,
             "fp64": np.float64}[compute]
    rng = np.random.default_rng(1)
    a = rng.standard_normal((7, 9)).astype(dtype)
    b = rng.standard_normal((3, 9, 5)).astype(dtype)
    out_dtype = np.float32 if compute == "fp16" else dtype
    out = np.full((3, 7, 5), np.nan, out_dtype)
    RUNTIME.matmul(np.broadcast_to(a, (3, 7, 9)), b, out, compute)  # batch stride 0
    if compute == "tf32":
        expected = np.matmul(round_to_tf32(a), round_to_tf32(b))
    else:
        expected = np.matmul(a.astype(out_dtype), b.astype(out_dtype))
    np.testing.assert_allclose(out, expected, rtol=1e-6 if dtype != np.float64 else 1e-14)
    if compute == "tf32":
        strict = np.matmul(a, b)
        assert np.abs(out - strict).max() > 1e-4  # the rounding is really there


def test_fp16_operands_round_the_output_once():
    a = np.full((1, 1, 2048), 1, np.float16)
    b = np.full((1, 2048, 1), 1 + 2**-10, np.float16)
    out = np.empty((1, 1, 1), np.float16)
    RUNTIME.matmul(a, b, out, "fp16")
    # float32 sum is exact (2050), then rounded once to fp16 (spacing 2 at 2048)
    assert out[0, 0, 0] == np.float16(2050)


def test_matmul_writes_strided_output_views():
    a = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    b = np.ones((1, 3, 2), np.float32)
    y = np.zeros((1, 2, 5), np.float32)
    RUNTIME.matmul(a, b, y[:, :, 1:3], "fp32")
    np.testing.assert_array_equal(y[0], [[0, 3, 3, 0, 0], [0, 12, 12, 0, 0]])
    assert matmul_layout(y[:, :, 1:3]) == (5, 0)


@pytest.mark.parametrize("bad, match", [
    (lambda a, b, o: (a.transpose(0, 2, 1), b, o), "do not match|contiguous"),
    (lambda a, b, o: (a[:, :, ::2], b, o), "contiguous"),
    (lambda a, b, o: (a.astype(np.float64), b, o), "takes"),
    (lambda a, b, o: (a, b, o.astype(np.float16)), "give"),
    (lambda a, b, o: (a[0], b, o), "3-D"),
])
def test_matmul_refuses_what_cublas_would_misread(bad, match):
    a = np.ones((2, 4, 4), np.float32)
    b = np.ones((2, 4, 4), np.float32)
    out = np.empty((2, 4, 4), np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        check_matmul(*bad(a, b, out), "fp32")
    with pytest.raises(ValueError, match="compute must be"):
        check_matmul(a, b, out, "bf16")


def test_gemm_compute_follows_the_math_mode():
    assert gemm_compute("fp32", "float32") == "fp32"
    assert gemm_compute("tf32", "float32") == "tf32"
    assert gemm_compute("tf32", np.complex64) == "tf32"
    assert gemm_compute("fp16", "float16") == "fp16"
    assert gemm_compute("fp64", "float64") == "fp64"


def test_accumulating_adds_to_the_output_with_one_rounding():
    """beta = 1: the bias already in an fp16 output joins the fp32 sum, rounded once.

    2048 + 1 + 0.75 in fp32 is 2049.75, which fp16 rounds to 2050; rounding the
    product first (2049 -> 2048, a tie to even) and adding the bias after gives 2048.
    """
    a = np.array([[[1.0, 1.0]]], np.float16)
    b = np.array([[[2048.0], [1.0]]], np.float16)
    out = np.full((1, 1, 1), 0.75, np.float16)
    RUNTIME.matmul(a, b, out, "fp16", accumulate=True)
    assert out[0, 0, 0] == np.float16(2050.0)
    twice = np.float16(np.float16(2049.0) + np.float16(0.75))
    assert twice == np.float16(2048.0) != out[0, 0, 0]
    RUNTIME.matmul(a, b, out, "fp16")  # without accumulate the output is overwritten
    assert out[0, 0, 0] == np.float16(2048.0)
