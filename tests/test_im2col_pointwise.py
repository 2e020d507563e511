"""im2col's forward 1x1 layers: a GEMM per image or one over the batch, whichever is faster."""

import numpy as np
import pytest
from conftest import envelope_ratio, random_inputs

from convbench import ConvProblem
from convbench.kernels.algorithms.im2col import folded_bytes
from convbench.kernels.cpu.im2col import Im2colKernel
from convbench.problem.reference import reference_for
from convbench.testing import assert_conv_close


@pytest.mark.parametrize("n, c, k, h, w, dtype", [
    (3, 16, 24, 7, 7, "float32"),
    (2, 8, 5, 5, 9, "float64"),
    (4, 32, 64, 14, 14, "float32"),
])
def test_both_gemms_of_a_1x1_layer_agree_with_the_reference(n, c, k, h, w, dtype):
    p = ConvProblem.make(n, c, h, w, k, 1, 1, bias=True, dtype=dtype)
    x, wt, b = random_inputs(p)
    kernel = Im2colKernel()
    assert kernel.folds_batch(p)
    assert kernel.arrays_bytes(p) == folded_bytes(p) == (c + k) * n * h * w * p.itemsize
    call = kernel.prepare(p, x, wt, b)
    assert call.details["gemm"] in ("per-image", "batch")
    chosen = call().copy()
    assert envelope_ratio(kernel, p, x, wt, b, chosen) <= 1
    assert_conv_close(chosen, x, wt, b, algo="im2col")


def test_the_batch_gemm_computes_the_layer(monkeypatch):
    """Forced, whatever the timing says: the transposes put every image back in place."""
    import convbench.kernels.cpu.im2col as im2col

    p = ConvProblem.make(3, 12, 6, 5, 20, 1, 1, bias=True, dtype="float64")
    x, wt, b = random_inputs(p, seed=1)
    for name in ("batch", "per-image"):
        monkeypatch.setattr(im2col, "fastest", lambda candidates, key=None, name=name: name)
        call = Im2colKernel().prepare(p, x, wt, b)
        assert call.details["gemm"] == name
        np.testing.assert_allclose(call(), reference_for(p, x, wt, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("change, reason", [
    (dict(mb=1), "one image: nothing to fold"),
    (dict(g=2), "grouped"),
    (dict(sh=2, sw=2), "strided: not a plain GEMM"),
    (dict(ph=1, pw=1), "padded: not a plain GEMM"),
])
def test_only_plain_batched_1x1_layers_fold(change, reason):
    p = ConvProblem.make(4, 16, 7, 7, 16, 1, 1)
    assert Im2colKernel().folds_batch(p)
    q = p.with_(**change)
    assert not Im2colKernel().folds_batch(q), reason
    x, wt, _ = random_inputs(q)
    call = Im2colKernel().prepare(q, x, wt, None)
    assert_conv_close(call(), x, wt, None, stride=q.stride, padding=q.padding, groups=q.g,
                      algo="im2col")


def test_a_cap_below_the_transposed_copies_keeps_the_per_image_gemms():
    p = ConvProblem.make(4, 16, 7, 7, 16, 1, 1)
    kernel = Im2colKernel(workspace_cap=folded_bytes(p) - 1)
    assert not kernel.folds_batch(p) and kernel.arrays_bytes(p) == 0
    x, wt, _ = random_inputs(p)
    assert kernel.prepare(p, x, wt, None).details["gemm"] == "per-image"


@pytest.mark.parametrize("direction", ["bwd_w", "bwd_wb"])
def test_both_weight_gradients_of_a_1x1_layer_match_the_reference(direction, monkeypatch):
    """dW from per-image products and from one GEMM over the batch, each forced."""
    import dataclasses

    import convbench.kernels.cpu.im2col as im2col

    base = ConvProblem.make(3, 12, 6, 5, 20, 1, 1, bias=direction == "bwd_wb", dtype="float64")
    p = dataclasses.replace(base, dir=direction)
    rng = np.random.default_rng(4)
    x, dy = rng.standard_normal(base.input_shape), rng.standard_normal(base.output_shape)
    want = reference_for(p, x, dy)
    kernel = Im2colKernel()
    # Both candidates' buffers exist while prepare times one against the other.
    assert kernel.arrays_bytes(p) == folded_bytes(p) + 3 * 20 * 12 * 8
    for name in ("batch", "per-image"):
        monkeypatch.setattr(im2col, "fastest", lambda candidates, key=None, name=name: name)
        call = kernel.prepare(p, x, dy, None)
        assert call.details["gemm"] == name
        got = call()
        if direction == "bwd_wb":
            np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-12)
            got, want_dw = got[0], want[0]
        else:
            want_dw = want
        np.testing.assert_allclose(got, want_dw, rtol=1e-12, atol=1e-12)
