"""Backward directions: the float64 reference, the CPU direct and im2col kernels, the API.

Property-style: random problems over stride 1-3, asymmetric padding, dilation,
groups and depthwise, odd sizes, batch 1-3, in float32 and float64, small
enough that the whole file runs in seconds.
"""

from dataclasses import replace

import numpy as np
import pytest

import convbench
from convbench import ConvProblem, UnsupportedProblem
from convbench.measure.compare import output_errors, reduction_length, taps_reaching
from convbench.measure.inputs import make_inputs
from convbench.measure.metrics import reference_and_scales
from convbench.problem.reference import reference_for
from convbench.testing import assert_conv_close

torch = pytest.importorskip("torch")


def random_problem(rng: np.random.Generator, dtype: str = "float64") -> ConvProblem:
    """A small random layer: any stride, asymmetric padding, dilation, groups, depthwise."""
    shape = rng.choice(["dense", "grouped", "depthwise"])
    g = 1 if shape == "dense" else int(rng.integers(2, 4))
    cg = 1 if shape == "depthwise" else int(rng.integers(1, 5))
    kg = int(rng.integers(1, 3)) if shape == "depthwise" else int(rng.integers(1, 5))
    r, s = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    pt, pb, pl, pr = (int(v) for v in rng.integers(0, 3, 4))
    h = int(rng.integers(max(1, dh * (r - 1) + 1 - pt - pb), 12))
    w = int(rng.integers(max(1, dw * (s - 1) + 1 - pl - pr), 12))
    return ConvProblem.make(int(rng.integers(1, 4)), cg * g, h, w, kg * g, r, s,
                            stride=(sh, sw), padding=((pt, pb), (pl, pr)),
                            dilation=(dh, dw), groups=g, dtype=dtype)


def requested_padding(p: ConvProblem):
    """Padding that makes ``p`` (the effective one, a negative bottom/right read as 0)."""
    (pt, pb), (pl, pr) = p.padding
    return ((pt, max(0, pb)), (pl, max(0, pr)))


def torch_gradients(p: ConvProblem, x: np.ndarray, w: np.ndarray, dy: np.ndarray):
    """dx, dw, db by torch float64 autograd (asymmetric padding through F.pad)."""
    (pt, pb), (pl, pr) = p.padding
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = torch.zeros(p.oc, dtype=torch.float64, requires_grad=True)
    # A negative bottom/right padding (rows no window reads) crops them.
    padded = torch.nn.functional.pad(xt, (pl, max(pr, 0), pt, max(pb, 0)))
    padded = padded[:, :, :p.padded_height, :p.padded_width]
    y = torch.nn.functional.conv2d(padded, wt, bt, p.stride, 0, p.dilation, p.g)
    assert tuple(y.shape) == p.output_shape
    y.backward(torch.tensor(dy, dtype=torch.float64))
    return xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def literal_gradients(p: ConvProblem, x: np.ndarray, w: np.ndarray, dy: np.ndarray):
    """dx and dw by the definition's loop nest, term by term (tiny problems only)."""
    dx = np.zeros(p.input_shape)
    dw = np.zeros(p.weight_shape)
    kg, cg = p.oc // p.g, p.ic // p.g
    for n in range(p.mb):
        for k in range(p.oc):
            for c in range(cg):
                ci = (k // kg) * cg + c
                for r in range(p.kh):
                    for s in range(p.kw):
                        for i in range(p.oh):
                            for j in range(p.ow):
                                h = i * p.sh - p.ph + r * p.dil_h
                                col = j * p.sw - p.pw + s * p.dil_w
                                if 0 <= h < p.ih and 0 <= col < p.iw:
                                    dx[n, ci, h, col] += w[k, c, r, s] * dy[n, k, i, j]
                                    dw[k, c, r, s] += x[n, ci, h, col] * dy[n, k, i, j]
    return dx, dw


def test_reference_matches_torch_autograd_on_random_problems():
    rng = np.random.default_rng(21)
    for _ in range(40):
        p = random_problem(rng)
        x = rng.standard_normal(p.input_shape)
        w = rng.standard_normal(p.weight_shape)
        dy = rng.standard_normal(p.output_shape)
        dx_t, dw_t, db_t = torch_gradients(p, x, w, dy)
        np.testing.assert_allclose(reference_for(replace(p, dir="bwd_d"), dy, w), dx_t,
                                   rtol=1e-12, atol=1e-12, err_msg=str(p))
        np.testing.assert_allclose(reference_for(replace(p, dir="bwd_w"), x, dy), dw_t,
                                   rtol=1e-12, atol=1e-12, err_msg=str(p))
        dw, db = reference_for(replace(p, dir="bwd_wb", bias=True), x, dy)
        np.testing.assert_allclose(dw, dw_t, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(db, db_t, rtol=1e-12, atol=1e-12)


def test_reference_matches_the_literal_loop_nest():
    rng = np.random.default_rng(5)
    for _ in range(12):
        p = random_problem(rng).with_(mb=1)
        x = rng.standard_normal(p.input_shape)
        w = rng.standard_normal(p.weight_shape)
        dy = rng.standard_normal(p.output_shape)
        dx, dw = literal_gradients(p, x, w, dy)
        np.testing.assert_allclose(reference_for(replace(p, dir="bwd_d"), dy, w), dx,
                                   rtol=1e-12, atol=1e-12, err_msg=str(p))
        np.testing.assert_allclose(reference_for(replace(p, dir="bwd_w"), x, dy), dw,
                                   rtol=1e-12, atol=1e-12, err_msg=str(p))


def test_reference_on_a_hand_worked_case():
    # x 3x3, w 2x2, stride 2, padding 1: a 2x2 output whose windows each hold one tap
    # of the input's corners and edges.
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    w = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    dy = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(1, 1, 2, 2)
    # y[0,0] reads x[0,0] with w[1,1]; y[0,1] x[0,1:3] with w[1,:]; y[1,0] x[1:3,0] with
    # w[:,1]; y[1,1] x[1:3,1:3] with all of w.
    dx = convbench.reference_backward_data(dy, w, (1, 1, 3, 3), stride=2, padding=1)
    assert dx[0, 0].tolist() == [[4.0, 30.0, 40.0], [200.0, 1000.0, 2000.0],
                                 [400.0, 3000.0, 4000.0]]
    dw = convbench.reference_backward_weights(x, dy, (1, 1, 2, 2), stride=2, padding=1)
    # dw[r,s] = sum_ij dy[i,j] x[2i-1+r, 2j-1+s] (zero outside)
    assert dw[0, 0].tolist() == [[5000.0, 6400.0], [8020.0, 9731.0]]
    dw, db = convbench.reference_backward_weights(x, dy, (1, 1, 2, 2), stride=2, padding=1,
                                                  bias_grad=True)
    assert db.tolist() == [1111.0]


@pytest.mark.parametrize("algo", ["direct", "im2col"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_kernels_agree_with_torch_within_their_envelope(algo, dtype, case_seed):
    rng = np.random.default_rng(case_seed)
    kernel = convbench.get_kernel(algo)
    for _ in range(12):
        p = random_problem(rng, dtype)
        x = rng.uniform(-1, 1, p.input_shape).astype(dtype)
        w = rng.uniform(-1, 1, p.weight_shape).astype(dtype)
        dy = rng.uniform(-1, 1, p.output_shape).astype(dtype)
        dx_t, dw_t, db_t = torch_gradients(p, x, w, dy)
        params = dict(stride=p.stride, padding=requested_padding(p), dilation=p.dilation,
                      groups=p.g)
        dx = kernel.prepare(replace(p, dir="bwd_d"), dy, w, None)()
        dw = kernel.prepare(replace(p, dir="bwd_w"), x, dy, None)()
        dw_b, db = kernel.prepare(replace(p, dir="bwd_wb", bias=True), x, dy, None)()
        assert (dx.dtype, dw.dtype, db.dtype) == (np.dtype(dtype),) * 3
        assert_conv_close(dx, dy, w, dir="bwd_d", shape=p.input_shape, algo=algo, **params)
        assert_conv_close(dw, x, dy, dir="bwd_w", shape=p.weight_shape, algo=algo, **params)
        assert_conv_close((dw_b, db), x, dy, dir="BWD_WB", algo=algo, **params)
        tol = 1e-4 if dtype == "float32" else 1e-11
        np.testing.assert_allclose(dx, dx_t, rtol=tol, atol=tol, err_msg=str(p))
        np.testing.assert_allclose(dw, dw_t, rtol=tol, atol=tol, err_msg=str(p))
        np.testing.assert_allclose(db, db_t, rtol=tol, atol=tol, err_msg=str(p))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_direct_and_im2col_are_bit_exact_on_the_exact_fill(dtype):
    rng = np.random.default_rng(7)
    kernels = [convbench.get_kernel(n) for n in ("direct", "im2col")]
    for i in range(10):
        base = random_problem(rng, dtype)
        for direction in ("bwd_d", "bwd_w", "bwd_wb"):
            p = replace(base, dir=direction, bias=direction == "bwd_wb")
            a, b, _ = make_inputs(p, i, "exact")
            ref = reference_for(p, a, b)
            for kernel in kernels:
                out = kernel.prepare(p, a, b, None)()
                for got, want in zip(out if direction == "bwd_wb" else (out,),
                                     ref if direction == "bwd_wb" else (ref,), strict=True):
                    assert np.array_equal(got, want), (kernel.name, str(p))


def test_exact_fill_keeps_long_reductions_exact():
    # bwd_w of a float32 layer whose N*P*Q exceeds the float32 budget: dy keeps only the
    # first positions non-zero, and every partial sum stays an integer float32 holds.
    p = ConvProblem.parse("--dir=BWD_W mb3ic2ih130iw1300oc2kh1")
    x, dy, _ = make_inputs(p, 0, "exact")
    assert np.count_nonzero(dy.reshape(3, 2, -1)[:, 0]) < p.mb * p.oh * p.ow
    assert float(np.abs(reference_for(p, x, dy)).max()) < 2**24
    q = ConvProblem.parse("--dir=BWD_D mb1ic2ih4oc1000000kh1")
    dy, w, _ = make_inputs(q, 0, "exact")
    assert np.count_nonzero(dy.reshape(1000000, -1).any(axis=1)) <= 2**24 // 4


def test_im2col_backward_tiles_under_its_workspace_cap():
    from convbench.kernels.cpu.im2col import Im2colKernel
    p = ConvProblem.parse("mb3ic4ih13iw11oc6kh3sh2ph1pw2n\"tiled\"")
    small = Im2colKernel(workspace_cap=4 * 3 * 3 * 6 * 4 * 2)  # two output rows per tile
    assert small.plan(p)[0] == 1 and small.plan(p)[1] < p.oh
    rng = np.random.default_rng(0)
    for direction in ("bwd_d", "bwd_w", "bwd_wb"):
        q = replace(p, dir=direction, bias=direction == "bwd_wb", dtype="float64")
        # bwd_w's sums come on top of its tiles: the same two rows' room above its floor.
        floor = Im2colKernel(workspace_cap=1).workspace_bytes(q)
        small = Im2colKernel(workspace_cap=max(small.workspace_cap, floor + 4 * 3 * 3 * 6 * 8))
        assert small.plan(q)[0] == 1 and small.plan(q)[1] < p.oh
        assert small.workspace_bytes(q) <= small.workspace_cap
        a, b, _ = make_inputs(q, 1)
        want = reference_for(q, a, b)
        got = small.prepare(q, a, b, None)()
        for g_, w_ in zip(got if direction == "bwd_wb" else (got,),
                          want if direction == "bwd_wb" else (want,), strict=True):
            np.testing.assert_allclose(g_, w_, rtol=1e-12, atol=1e-12)
        if direction == "bwd_d":  # the forward's lowering, tile for tile
            assert small.workspace_bytes(q) == small.workspace_bytes(replace(p, dtype="float64"))
        else:  # a tile and the sums of dW^T
            assert small.workspace_bytes(q) >= q.oc * q.reduction_length * q.itemsize
    del rng
    # bwd_w keeps its lowered tile within backward_weights_tile_bytes (cache-sized) even
    # under a large cap; the forward and bwd_d tile as before.
    from convbench.kernels.algorithms.im2col import lowered_bytes
    big = ConvProblem.parse("mb8ic64ih56oc64kh3ph1")
    default = Im2colKernel()
    tile = default.plan(replace(big, dir="bwd_w"))
    assert lowered_bytes(big, *tile) <= default.backward_weights_tile_bytes < \
        lowered_bytes(big, *default.plan(big))
    assert default.plan(replace(big, dir="bwd_d")) == default.plan(big)


@pytest.mark.parametrize("desc, cap", [
    ("mb3ic4ih9iw7oc6kh3ph1", None),  # one tile of three images side by side
    ("g2mb3ic4ih9iw7oc6kh3sh2ph1", 4 * 18 * 4 * 2),  # grouped, strided, many row tiles
    ("mb2ic5ih8oc7kh2dh2ph1", 5 * 4 * 8 * 8 * 2),  # dilated, a tile per image
])
def test_both_im2col_weight_gemms_compute_dw(monkeypatch, desc, cap):
    """``dY col^T`` and ``(col dY^T)^T``, forced whatever the timing says, on tiles of
    several images, of a few rows, and of groups."""
    import convbench.kernels.cpu.im2col as im2col

    for direction in ("bwd_w", "bwd_wb"):
        p = replace(ConvProblem.parse(desc), dir=direction, bias=direction == "bwd_wb",
                    dtype="float64")
        x, dy, _ = make_inputs(p, 2)
        want = reference_for(p, x, dy)
        # The cap is the lowered tiles' room above the floor (dW^T and its part, one row).
        floor = im2col.Im2colKernel(workspace_cap=1).workspace_bytes(p)
        kernel = (im2col.Im2colKernel() if cap is None
                  else im2col.Im2colKernel(workspace_cap=floor + cap))
        for name in ("dY.colT", "col.dYT"):
            monkeypatch.setattr(im2col, "fastest", lambda candidates, key=None, name=name: name)
            call = kernel.prepare(p, x, dy, None)
            assert call.details["gemm"] == name
            assert (call.details["tiles"] > 1) == (cap is not None)
            got = call()
            for g_, w_ in zip(got if direction == "bwd_wb" else (got,),
                              want if direction == "bwd_wb" else (want,), strict=True):
                np.testing.assert_allclose(g_, w_, rtol=1e-12, atol=1e-12)
            assert call(x, dy) is got or direction == "bwd_wb"  # the kernel's own buffer


@pytest.mark.parametrize("desc", [
    "g2mb3ic2ih6iw1oc2oh5kh3ph1pw2dh0dw1",  # a dilated tap left of a one-column output
    "mb2ic3ih9iw2oc4ow1kh3sh3sw1ph2dh1",
])
def test_the_lowering_writes_only_its_own_rows(desc):
    """Each lowered row is written whole and nothing past it: with a left padding wider
    than the output row, the zeros before the first valid column once ran into the next
    row, which in bwd_w's images-side-by-side layout another thread owns."""
    from convbench.kernels.cpu.im2col import im2col_lower

    p = ConvProblem.parse(desc)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, p.input_shape).astype(np.float32)
    crs, length = p.ic * p.kh * p.kw, p.oh * p.ow
    geometry = (p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.ow)
    want = np.empty((p.mb, crs, length), np.float32)
    im2col_lower(x, want, 0, 0, p.oh, *geometry)
    np.testing.assert_array_equal(
        want, reference_lowering(x, p).astype(np.float32))
    sentinel = np.float32(12345.0)
    for _ in range(50):  # a race shows only now and then
        flat = np.full(crs * p.mb * length + 8, sentinel, np.float32)
        side_by_side = flat[:-8].reshape(crs, p.mb, length)
        im2col_lower(x, side_by_side.transpose(1, 0, 2), 0, 0, p.oh, *geometry)
        np.testing.assert_array_equal(side_by_side.transpose(1, 0, 2), want)
        assert (flat[-8:] == sentinel).all()


def reference_lowering(x, p):
    """``col[n, (c*R + r)*S + s, p*Q + q]`` by its definition, in float64."""
    (pt, _), (pl, _) = p.padding
    col = np.zeros((p.mb, p.ic * p.kh * p.kw, p.oh * p.ow))
    for c in range(p.ic):
        for r in range(p.kh):
            for s in range(p.kw):
                for i in range(p.oh):
                    for j in range(p.ow):
                        h, w = i * p.sh - pt + r * p.dil_h, j * p.sw - pl + s * p.dil_w
                        if 0 <= h < p.ih and 0 <= w < p.iw:
                            col[:, (c * p.kh + r) * p.kw + s, i * p.ow + j] = x[:, c, h, w]
    return col


def test_backward_envelopes_use_the_directions_reduction_length():
    p = ConvProblem.parse("mb2ic6ih9oc4kh3sh2ph1")
    assert reduction_length(p) == 6 * 9
    assert reduction_length(replace(p, dir="bwd_d")) == 4 * 2 * 2  # ceil(3/2)^2 taps
    assert reduction_length(replace(p, dir="bwd_w")) == 2 * 5 * 5
    assert reduction_length(replace(p, dir="bwd_wb", bias=True)) == 2 * 5 * 5
    assert taps_reaching(3, 1, 1) == 3 and taps_reaching(3, 2, 2) == 3  # dilation 2, stride 2
    assert taps_reaching(5, 3, 1) == 2 and taps_reaching(7, 4, 2) == 4
    # The count is a bound: no input pixel receives more taps than it says.
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = replace(random_problem(rng), dir="bwd_d")
        ones = reference_for(q, np.ones(q.output_shape), np.ones(q.weight_shape))
        assert ones.max() <= reduction_length(q)


def test_a_wrong_gradient_leaves_the_envelope_in_every_direction():
    rng = np.random.default_rng(11)
    p = ConvProblem.parse("--dir=FWD_B mb2ic4ih7oc6kh3sh2ph1")
    for direction in ("bwd_d", "bwd_w", "bwd_wb"):
        q = replace(p, dir=direction)
        a, b, _ = make_inputs(q, 2)
        out = convbench.get_kernel("im2col").prepare(q, a, b, None)()
        reference = reference_and_scales(q, a, b, None)
        model = convbench.ErrorModel("direct")
        assert output_errors(q, out, reference, model)["envelope_ratio"] <= 1.0
        if direction == "bwd_wb":
            bad = (out[0], out[1] * (1 + 1e-3))  # only db is wrong
            errors = output_errors(q, bad, reference, model)
            assert errors["parts"]["dw"]["envelope_ratio"] <= 1.0
        else:
            bad = out.copy()
            bad.flat[rng.integers(bad.size)] += 1e-3
            errors = output_errors(q, bad, reference, model)
        assert errors["envelope_ratio"] > 1.0


# ------------------------------------------------------------------------- public API
def test_api_matches_torch_nn_grad_for_every_padding_form():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 2))
    for params in (dict(stride=2, padding=1), dict(padding="same", dilation=2),
                   dict(padding="valid", stride=(1, 3)), dict(padding=(2, 0), dilation=(2, 1))):
        params["groups"] = 2
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        y = torch.nn.functional.conv2d(xt, wt, None, **params)  # autograd: takes "same"
        dy = rng.standard_normal(tuple(y.shape))
        y.backward(torch.tensor(dy))
        want_dx, want_dw = xt.grad, wt.grad
        if not isinstance(params["padding"], str):  # torch.nn.grad's own functions agree
            dyt = torch.tensor(dy)
            assert torch.allclose(torch.nn.grad.conv2d_input(x.shape, wt, dyt, **params),
                                  want_dx)
            assert torch.allclose(torch.nn.grad.conv2d_weight(xt, w.shape, dyt, **params),
                                  want_dw)
        for algo in ("direct", "im2col", "auto"):
            dx = convbench.conv2d_backward_data(dy, w, x.shape, algo=algo, **params)
            dw, db = convbench.conv2d_backward_weights(x, dy, w.shape, algo=algo,
                                                       bias_grad=True, **params)
            np.testing.assert_allclose(dx, want_dx.numpy(), rtol=1e-11, atol=1e-11)
            np.testing.assert_allclose(dw, want_dw.numpy(), rtol=1e-11, atol=1e-11)
            np.testing.assert_allclose(db, dy.sum((0, 2, 3)), rtol=1e-12)
    dw_alone = convbench.conv2d_backward_weights(x, dy, w.shape, **params)
    assert isinstance(dw_alone, np.ndarray) and dw_alone.shape == w.shape


def test_x_shape_settles_a_strides_remainder_as_output_padding_does():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 2, 3, 3))
    dy = rng.standard_normal((1, 3, 4, 4))
    for extra in (0, 1):  # 9x9 and 10x10 inputs both give 4x4 outputs at stride 2
        h = 9 + extra
        dx = convbench.conv2d_backward_data(dy, w, (1, 2, h, h), stride=2)
        want = torch.nn.functional.conv_transpose2d(torch.tensor(dy), torch.tensor(w),
                                                    stride=2, output_padding=extra)
        assert dx.shape == (1, 2, h, h)
        np.testing.assert_allclose(dx, want.numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"dy must have shape \(N, K, P, Q\) = \(1, 3, 5, 5\) "
                                         r"for an input of shape \(1, 2, 11, 11\).*got "
                                         r"\(1, 3, 4, 4\)"):
        convbench.conv2d_backward_data(dy, w, (1, 2, 11, 11), stride=2)


@pytest.mark.parametrize("call, error, message", [
    (lambda dy, w, x: convbench.conv2d_backward_data(dy[0], w, x.shape), ValueError,
     r"dy must be 4-D \(N, K, P, Q\), got shape \(3, 4, 4\)"),
    (lambda dy, w, x: convbench.conv2d_backward_data(dy, w[:2], x.shape), ValueError,
     r"dy must have K = w.shape\[0\] = 2 channels, got dy.shape=\(2, 3, 4, 4\)"),
    (lambda dy, w, x: convbench.conv2d_backward_data(dy, w, (2, 5, 6, 6)), ValueError,
     r"w.shape\[1\]|shape\[1\] must be C/groups=5"),
    (lambda dy, w, x: convbench.conv2d_backward_data(dy, w, (2, 2, 6)), TypeError,
     r"x_shape must be a sequence of 4 ints \(N, C, H, W\), got \(2, 2, 6\)"),
    (lambda dy, w, x: convbench.conv2d_backward_data(dy, w.astype(np.float32), x.shape),
     TypeError, "dy and w must have the same dtype, got dy float64 and w float32"),
    (lambda dy, w, x: convbench.conv2d_backward_data(dy.astype(int), w, x.shape), TypeError,
     "dy must have a floating dtype"),
    (lambda dy, w, x: convbench.conv2d_backward_weights(x, dy[:1], (3, 2, 3, 3)), ValueError,
     r"dy must have x's batch, N = 2, got dy.shape=\(1, 3, 4, 4\)"),
    (lambda dy, w, x: convbench.conv2d_backward_weights(x, dy, (3, 2, 2, 2)), ValueError,
     r"dy must have shape \(N, K, P, Q\) = \(2, 3, 5, 5\).*got \(2, 3, 4, 4\)"),
    (lambda dy, w, x: convbench.conv2d_backward_weights(x, dy, "3233"), TypeError,
     r"w_shape must be a sequence of 4 ints \(K, C/groups, R, S\)"),
    (lambda dy, w, x: convbench.conv2d_backward_weights(x, dy, w.shape, groups=2), ValueError,
     "groups=2 must divide the output channels K=3"),
    (lambda dy, w, x: convbench.conv2d_backward_weights(x, dy, w.shape, algo="winograd_9x9"),
     ValueError, "winograd_9x9"),
])
def test_bad_backward_input_names_the_expected_and_the_given(call, error, message):
    x, w, dy = np.zeros((2, 2, 6, 6)), np.zeros((3, 2, 3, 3)), np.zeros((2, 3, 4, 4))
    with pytest.raises(error, match=message):
        call(dy, w, x)


def test_an_algorithm_that_does_not_compute_a_direction_says_so():
    class ForwardOnly(convbench.KernelBase):
        name, family = "forward_only", "direct"

        def prepare_call(self, p, x, w, bias):  # pragma: no cover -- never reached
            raise AssertionError("a bwd_d problem reached a forward-only kernel")

    convbench.register(ForwardOnly(), replace=True)
    try:
        with pytest.raises(UnsupportedProblem, match="cpu forward_only does not compute bwd_d"):
            convbench.conv2d_backward_data(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)),
                                           (1, 1, 3, 3), algo="forward_only")
    finally:
        convbench.registry.unregister("forward_only", "cpu")


def test_auto_picks_a_kernel_of_the_direction():
    p = ConvProblem.parse("mb1ic32ih8oc32kh3ph1")
    for direction in ("bwd_d", "bwd_w", "bwd_wb"):
        q = replace(p, dir=direction, bias=direction == "bwd_wb")
        kernel = convbench.auto_kernel(q)
        assert direction in kernel.directions and kernel.supports(q) is None
    assert convbench.auto_kernel(replace(p, dir="bwd_w")).name == "im2col"


def test_zero_batch_gives_empty_and_zero_gradients():
    w = np.ones((3, 2, 3, 3), dtype=np.float32)
    dx = convbench.conv2d_backward_data(np.zeros((0, 3, 4, 4), np.float32), w, (0, 2, 6, 6))
    assert dx.shape == (0, 2, 6, 6)
    dw, db = convbench.conv2d_backward_weights(np.zeros((0, 2, 6, 6), np.float32),
                                               np.zeros((0, 3, 4, 4), np.float32), w.shape,
                                               bias_grad=True)
    assert not dw.any() and not db.any() and dw.shape == w.shape and db.shape == (3,)


@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_plans_bind_a_direction(algo):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    params = dict(stride=2, padding=1, groups=2)
    f_d = convbench.plan(x.shape, w, dir="BWD_D", algo=algo, **params)
    f_w = convbench.plan(x.shape, w, dir="bwd_w", algo=algo, **params)
    f_wb = convbench.plan(x, w, dir="bwd_wb", algo=algo, **params)
    assert isinstance(f_d, convbench.BackwardPlan) and f_d.weights_bound
    assert f_d.problem.dir == "bwd_d" and f_wb.problem.bias
    for seed in range(2):  # a second call with new values: nothing stale is reused
        dy = np.random.default_rng(seed).standard_normal((2, 6, 4, 4)).astype(np.float32)
        same = dict(params, algo=f_d.kernel.name)
        np.testing.assert_array_equal(f_d(dy), convbench.conv2d_backward_data(dy, w, x.shape,
                                                                              **same))
        want = convbench.conv2d_backward_weights(x, dy, w.shape, **same)
        np.testing.assert_allclose(f_w(x, dy), want, rtol=1e-6, atol=1e-6)
        dw, db = f_wb(x, np.asfortranarray(dy))  # not contiguous: copied into the plan
        np.testing.assert_allclose(dw, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(db, dy.sum((0, 2, 3)), rtol=1e-5)
    with pytest.raises(ValueError, match=r"bwd_d plan takes dy of shape \(2, 6, 4, 4\), got"):
        f_d(np.zeros((2, 6, 5, 5), np.float32))
    with pytest.raises(TypeError, match=r"bwd_w plan takes \(x, dy\), got 1 arrays"):
        f_w(x)
    with pytest.raises(ValueError, match="takes no bias"):
        convbench.plan(x.shape, w, np.zeros(6, np.float32), dir="bwd_w", **params)


@pytest.mark.parametrize("algo", ["fft", "winograd"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fft_and_winograd_backward_stay_within_their_envelope(algo, dtype, case_seed):
    # The harness's envelopes hold the other algorithms' backward passes too, on random
    # problems (Winograd: the 3x3, stride-1, dilation-1 ones its math allows).
    rng = np.random.default_rng(case_seed)
    kernel = convbench.get_kernel(algo)
    done = 0
    while done < 5:
        p = random_problem(rng, dtype)
        if algo == "winograd":
            p = ConvProblem.make(p.mb, p.ic, p.ih + 2, p.iw + 2, p.oc, 3, 3,
                                 padding=((p.ph, max(0, p.padding[0][1])),
                                          (p.pw, max(0, p.padding[1][1]))),
                                 groups=p.g, dtype=dtype)
        params = dict(stride=p.stride, padding=requested_padding(p), dilation=p.dilation,
                      groups=p.g)
        for direction in ("bwd_d", "bwd_w", "bwd_wb"):
            q = replace(p, dir=direction, bias=direction == "bwd_wb")
            assert kernel.supports(q) is None, (str(q), kernel.supports(q))
            a, b, _ = make_inputs(q, done)
            out = kernel.prepare(q, a, b, None)()
            shape = q.input_shape if direction == "bwd_d" else q.weight_shape
            assert_conv_close(out, a, b, dir=direction, shape=shape, algo=algo, **params)
        done += 1
