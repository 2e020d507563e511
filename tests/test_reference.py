"""The float64 reference, checked against oracles that share none of its code."""

import numpy as np
import pytest

import convbench
from convbench.problem import ConvProblem
from convbench.problem.reference import reference_for


def test_hand_computed_tiny_case():
    # x = 1..16 in a 4x4 image, 2x2 filter [[1, 0], [0, -1]], stride 2, padding 1,
    # bias 0.5. Worked on paper: padded image is 6x6 with the data at [1:5, 1:5];
    # output (3x3) at (i, j) = xp[2i, 2j] - xp[2i+1, 2j+1] + 0.5.
    x = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    y = convbench.reference(x, w, np.array([0.5]), stride=2, padding=1)
    expected = np.array([[[[-0.5, -2.5, 0.5],
                           [-8.5, -4.5, 8.5],
                           [0.5, 14.5, 16.5]]]])
    np.testing.assert_array_equal(y, expected)


def test_hand_computed_groups_and_dilation():
    # Two groups of one channel; dilation 2 on a 1x5 row picks taps 0 and 2.
    x = np.array([[[[1.0, 2.0, 3.0, 4.0, 5.0]], [[10.0, 20.0, 30.0, 40.0, 50.0]]]])
    w = np.array([[[[1.0, 1.0]]], [[[2.0, -1.0]]]])
    y = convbench.reference(x, w, groups=2, dilation=(1, 2))
    np.testing.assert_array_equal(y, [[[[4.0, 6.0, 8.0]], [[-10.0, 0.0, 10.0]]]])


def test_loop_oracle_with_asymmetric_same_padding():
    """A literal 7-deep loop nest (no library) against the reference."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((6, 2, 2, 3))
    b = rng.standard_normal(6)
    p = ConvProblem.make(2, 4, 5, 6, 6, 2, 3, padding="same", groups=2, bias=True,
                         dtype="float64")
    (pt, _), (pl, _) = p.padding
    expected = np.zeros(p.output_shape)
    for n in range(2):
        for k in range(6):
            g = k // 3
            for i in range(p.oh):
                for j in range(p.ow):
                    acc = b[k]
                    for c in range(2):
                        for r in range(2):
                            for s in range(3):
                                row, col = i - pt + r, j - pl + s
                                if 0 <= row < 5 and 0 <= col < 6:
                                    acc += w[k, c, r, s] * x[n, g * 2 + c, row, col]
                    expected[n, k, i, j] = acc
    y = convbench.reference(x, w, b, padding="same", groups=2)
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-13)


torch = pytest.importorskip("torch", reason="torch is the float64 oracle; pip install "
                                            "'convbench[test]'")
TORCH_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=(3, 1), padding=(0, 2), dilation=(2, 1), groups=1),
    dict(stride=1, padding="same", dilation=2, groups=2),
    dict(stride=1, padding="valid", dilation=3, groups=6),
    dict(stride=1, padding="same", dilation=1, groups=3),
]


@pytest.mark.parametrize("kwargs", TORCH_CASES)
@pytest.mark.parametrize("ksize", [(1, 1), (3, 3), (2, 4), (5, 1)])
def test_reference_matches_torch_float64(kwargs, ksize):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 13, 11))
    w = rng.standard_normal((12, 6 // kwargs["groups"], *ksize))
    b = rng.standard_normal(12)
    y = convbench.reference(x, w, b, **kwargs)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                          torch.from_numpy(b), **kwargs).numpy()
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_reference_casts_float32_up():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    y = convbench.reference(x, w)
    exact = convbench.reference(x.astype(np.float64), w.astype(np.float64))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, exact)


def test_absolute_reference_is_the_error_scale():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    p = ConvProblem.make(1, 2, 5, 5, 3, 3, 3, bias=True, dtype="float64")
    scale = reference_for(p, x, w, b, absolute=True)
    np.testing.assert_allclose(scale, reference_for(p, np.abs(x), np.abs(w), np.abs(b)))
    assert np.all(scale >= np.abs(reference_for(p, x, w, b)) - 1e-12)
