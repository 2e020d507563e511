"""Bad input gets a clear error; odd-but-valid input works; NaN/Inf propagate."""

import numpy as np
import pytest

import convbench
from convbench import UnsupportedProblem
from convbench.testing import assert_conv_close

CPU_KERNELS = ["direct", "im2col", "fft", "winograd"]


def _xw(dtype=np.float32, n=2, c=4, h=9, w=7, k=6, r=3, s=3, g=1):
    rng = np.random.default_rng(0)
    return (rng.uniform(-1, 1, (n, c, h, w)).astype(dtype),
            rng.uniform(-1, 1, (k, c // g, r, s)).astype(dtype))


@pytest.mark.parametrize("algo", CPU_KERNELS)
@pytest.mark.parametrize("make_args, error, message", [
    (lambda x, w: (x[0], w), ValueError, r"x must be 4-D \(N, C, H, W\), got shape \(4, 9, 7\)"),
    (lambda x, w: (x, w[0]), ValueError, r"w must be 4-D \(K, C/groups, R, S\), got shape"),
    (lambda x, w: (x[:, :3], w), ValueError, r"channel mismatch: x has C=3 channels, so "
                                             r"w.shape\[1\] must be C/groups=3"),
    (lambda x, w: (x.astype(np.int32), w), TypeError, "x must have a floating dtype.*got int32"),
    (lambda x, w: (x, w.astype(np.int64)), TypeError, "w must have a floating dtype.*got int64"),
    (lambda x, w: (x.astype(bool), w), TypeError, "floating dtype.*got bool"),
    (lambda x, w: (x, w.astype(np.float64)), TypeError,
     "same dtype, got x float32 and w float64"),
    (lambda x, w: (x.astype(np.complex64), w), TypeError, "got complex64"),
    (lambda x, w: (x[:, :, :2, :2], w[:, :, :3, :3]), ValueError,
     "output size must be positive, got 0x0"),
])
def test_bad_arrays(algo, make_args, error, message):
    x, w = make_args(*_xw())
    with pytest.raises(error, match=message):
        convbench.conv2d(x, w, algo=algo)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(groups=3), ValueError, "groups=3 must divide the input channels C=4"),
    (dict(groups=0), ValueError, "groups must be a positive int, got 0"),
    (dict(groups=2.0), ValueError, "groups must be a positive int, got 2.0"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride="2"), TypeError, "stride must be an int or a pair"),
    (dict(padding=(1, 2, 3)), TypeError, "padding must be an int or a pair"),
    (dict(padding="same", stride=2), ValueError, "padding='same' needs stride 1"),
    (dict(dilation=-1), ValueError, "dilation must be >= 1"),
    (dict(algo="winograd9"), ValueError, "unknown cpu algorithm 'winograd9'; registered: "
                                         "direct, im2col, fft, winograd"),
    (dict(backend="tpu"), ValueError, "backend must be one of"),
])
def test_bad_parameters(kwargs, error, message):
    x, w = _xw()
    with pytest.raises(error, match=message):
        convbench.conv2d(x, w, **kwargs)


def test_groups_must_divide_k():
    x, w = _xw(c=4, k=6, g=4)
    with pytest.raises(ValueError, match="groups=4 must divide the output channels K=6"):
        convbench.conv2d(x, w, groups=4)


@pytest.mark.parametrize("bias, error, message", [
    (np.zeros(5, np.float32), ValueError, r"bias must have shape \(K,\) = \(6,\), got \(5,\)"),
    (np.zeros((6, 1), np.float32), ValueError, r"bias must have shape \(K,\) = \(6,\)"),
    (np.zeros(6, np.float64), TypeError, "bias must have the dtype of x \\(float32\\)"),
    (np.zeros(6, np.int32), TypeError, "bias must have a floating dtype"),
])
def test_bad_bias(bias, error, message):
    x, w = _xw()
    with pytest.raises(error, match=message):
        convbench.conv2d(x, w, bias)


def test_float16_is_gpu_only_on_cpu():
    x, w = _xw(np.float16)
    with pytest.raises(UnsupportedProblem, match="float16 is GPU-only"):
        convbench.conv2d(x, w, algo="im2col")


def test_unsupported_problem_is_a_value_error_with_reason():
    x, w = _xw(r=5, s=5)
    with pytest.raises(ValueError, match="needs a 3x3 filter, got 5x5"):
        convbench.conv2d(x, w, algo="winograd")


@pytest.mark.parametrize("algo", CPU_KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_odd_layouts_work(algo, dtype):
    """Non-contiguous, read-only, Fortran-ordered and big-endian arrays all work."""
    x, w = _xw(dtype, h=18, w=7)
    bias = np.linspace(-1, 1, 6).astype(dtype)
    expected = convbench.conv2d(np.ascontiguousarray(x[:, :, ::2]), w, bias, padding=1,
                                algo=algo)
    assert_conv_close(expected, x[:, :, ::2], w, bias, padding=1, algo=algo)

    strided = x[:, :, ::2]  # non-contiguous view
    readonly = np.ascontiguousarray(strided)
    readonly.flags.writeable = False
    fortran = np.asfortranarray(strided)
    big_endian = strided.astype(np.dtype(dtype).newbyteorder(">"))
    w_transposed = np.ascontiguousarray(w.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    for xi, wi in ((strided, w), (readonly, w), (fortran, w), (big_endian, w),
                   (strided, w_transposed)):
        y = convbench.conv2d(xi, wi, bias, padding=1, algo=algo)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, expected)  # layout does not change the arithmetic
    assert readonly.flags.writeable is False


def test_array_likes_and_empty_batch():
    x = [[[[1.0, 2.0], [3.0, 4.0]]]]
    w = [[[[1.0]]]]
    np.testing.assert_array_equal(convbench.conv2d(x, w, algo="im2col"), x)
    x0 = np.zeros((0, 3, 5, 5), np.float32)
    y = convbench.conv2d(x0, np.ones((2, 3, 3, 3), np.float32))
    assert y.shape == (0, 2, 3, 3) and y.dtype == np.float32


def _poisoned_inputs():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (3, 4, 12, 10))  # image 2 stays clean
    x[0, 1, 5, 3] = np.nan
    x[1, 2, 0, 9] = np.inf
    x[1, 0, 11, 0] = -np.inf
    w = rng.uniform(-1, 1, (3, 4, 3, 3))
    return x, w


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algo", ["direct", "im2col", "winograd"])
def test_nan_inf_propagate_exactly_like_reference(algo, dtype):
    x, w = _poisoned_inputs()
    x, w = x.astype(dtype), w.astype(dtype)
    ref = convbench.reference(x, w, padding=1)
    y = convbench.conv2d(x, w, padding=1, algo=algo)
    assert (~np.isfinite(ref)).sum() > 0
    np.testing.assert_array_equal(np.isfinite(y), np.isfinite(ref))
    assert_conv_close(y[2:], x[2:], w, padding=1, algo=algo)  # the clean image


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_inf_never_lost_by_fft(dtype):
    """FFT mixes a whole tile, so a NaN spreads over its tile; it is never lost."""
    x, w = _poisoned_inputs()
    x, w = x.astype(dtype), w.astype(dtype)
    ref = convbench.reference(x, w, padding=1)
    y = convbench.conv2d(x, w, padding=1, algo="fft")
    assert np.all(~np.isfinite(y[~np.isfinite(ref)]))
    # Tiles never cross images: the clean image is finite and accurate.
    assert np.all(np.isfinite(y[2]))
    assert_conv_close(y[2:], x[2:], w, padding=1, algo="fft")
