"""CPU FFT and Winograd backward passes against torch's float64 autograd.

Each kernel's gradient is held to torch float64 (``torch.nn.grad``'s
semantics, through autograd on an explicitly padded input so that asymmetric
padding is covered) within a normwise bound: ``|g - ref| <= c u sqrt(n)
max(S)``, with ``S`` the same gradient of ``|operands|`` and ``n`` the
direction's reduction length. Winograd's refusals name the reason.
"""

import dataclasses

import numpy as np
import pytest
from backward_reference import DIRECTIONS, check_problem, torch_gradients

from convbench import ConvProblem, UnsupportedProblem
from convbench.kernels.algorithms import winograd_backward as wb
from convbench.kernels.algorithms.fft import plan_fft_backward
from convbench.kernels.cpu import winograd_backward as cpu_wb
from convbench.kernels.cpu.fft import FftKernel
from convbench.kernels.cpu.winograd import WinogradKernel
from convbench.kernels.cpu.winograd_tiles import Winograd4x4Kernel, Winograd6x6Kernel


def random_problems(seed, count, winograd):
    """Random layers: stride 1-3, asymmetric padding, dilation, groups and depthwise, odd sizes."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        g = int(rng.choice([1, 1, 2, 3]))
        cg, kg = int(rng.integers(1, 4)), int(rng.choice([1, 2, 3, 5]))
        if winograd:
            r = s = 3
            stride = dilation = (1, 1)
            pads = tuple(tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(2))
        else:
            r, s = (int(v) for v in rng.integers(1, 6, 2))
            stride = tuple(int(v) for v in rng.integers(1, 4, 2))
            dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
            pads = tuple(tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(2))
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        try:
            p = ConvProblem.make(int(rng.integers(1, 4)), cg * g, h, w, kg * g, r, s,
                                 stride=stride, padding=pads, dilation=dilation, groups=g,
                                 dtype=str(rng.choice(["float32", "float64"])))
        except ValueError:  # output size <= 0
            continue
        out.append(p)
    return out


NAMED = [
    ConvProblem.make(2, 4, 9, 11, 6, 3, 3, padding=1),
    ConvProblem.make(3, 6, 10, 7, 4, 3, 3, padding=((1, 0), (2, 1)), groups=2),
    ConvProblem.make(1, 6, 7, 8, 6, 3, 3, padding=2, groups=6, dtype="float64"),  # depthwise
    ConvProblem.make(1, 4, 8, 8, 8, 3, 3, padding=3, groups=4),  # dy cropped for bwd_d
    ConvProblem.make(2, 3, 5, 6, 5, 3, 3, padding=((2, 1), (0, 2)), dtype="float64"),
    ConvProblem.parse("mb2ic5ih9iw8oc3oh6ow7kh3ph0pw1"),  # negative trailing padding
]
STRIDED = [
    ConvProblem.make(3, 6, 10, 7, 4, 3, 2, stride=(2, 3), padding=((1, 0), (2, 1)),
                     dilation=(1, 2), groups=2),
    ConvProblem.make(2, 3, 13, 12, 5, 5, 5, stride=3, padding=((0, 3), (3, 0)), dilation=2,
                     dtype="float64"),
    ConvProblem.make(1, 4, 8, 8, 4, 3, 3, stride=2, padding=3, groups=4),
    ConvProblem.make(2, 3, 17, 15, 4, 7, 1, stride=(2, 1), padding=((3, 3), (0, 0))),
]


@pytest.mark.parametrize("p", NAMED + STRIDED, ids=str)
def test_fft_backward_matches_torch(p):
    check_problem(FftKernel(), p)


@pytest.mark.parametrize("p", NAMED, ids=str)
def test_winograd_backward_matches_torch(p):
    check_problem(WinogradKernel(), p)


def test_random_layers_match_torch():
    fft, winograd = FftKernel(), WinogradKernel()
    for i, p in enumerate(random_problems(1, 10, winograd=False)):
        check_problem(fft, p, seed=i)
    for i, p in enumerate(random_problems(2, 10, winograd=True)):
        check_problem(winograd, p, seed=i)


@pytest.mark.parametrize("tile", [Winograd4x4Kernel, Winograd6x6Kernel])
@pytest.mark.parametrize("layout", ["auto", "planar", "channels-last"])
def test_winograd_tiles_bwd_d_matches_torch(tile, layout):
    """F(4x4,3x3) and F(6x6,3x3) bwd_d: their forward pass on dy, in either layout."""
    kernel = tile(layout=layout)
    assert kernel.directions == ("fwd", "bwd_d")
    for i, p in enumerate(NAMED + random_problems(8, 6, winograd=True)):
        check_problem(kernel, p, seed=i, directions=("bwd_d",))


@pytest.mark.parametrize("tile", [Winograd4x4Kernel, Winograd6x6Kernel])
def test_winograd_tiles_bwd_d_refuses_with_the_reason_and_records_the_forward_choice(tile):
    kernel = tile()
    label = kernel.label
    for base, reason in ((ConvProblem.make(1, 2, 9, 9, 2, 5, 5), "needs a 3x3 filter, got 5x5"),
                         (ConvProblem.make(1, 2, 9, 9, 2, 3, 3, stride=2),
                          "needs stride 1, got (2, 2)"),
                         (ConvProblem.make(1, 2, 9, 9, 2, 3, 3, dilation=2),
                          "needs dilation 1, got (2, 2)")):
        assert kernel.supports(dataclasses.replace(base, dir="bwd_d")) == \
            f"winograd {label} bwd_d (on dy) {reason}"
        for direction in ("bwd_w", "bwd_wb"):
            changed = dataclasses.replace(base, dir=direction, bias=direction == "bwd_wb")
            assert "does not compute" in kernel.supports(changed)
    base = ConvProblem.make(2, 32, 12, 12, 16, 3, 3, padding=1)
    rng = np.random.default_rng(3)
    dy = rng.standard_normal(base.output_shape).astype(np.float32)
    w = rng.standard_normal(base.weight_shape).astype(np.float32)
    call = kernel.prepare(dataclasses.replace(base, dir="bwd_d"), dy, w, None)
    call()
    # The forward call on dy (16 channels: channels-last) names its tile, layout and phases.
    assert call.details["tile"] == label and call.details["layout"] == "channels-last"
    assert set(call.details["phase_s"]) >= {"input_transform", "gemm", "output_transform"}


#: Layers with at least 16 channels per group on both sides: bwd_w's channels-last path.
WIDE = [
    ConvProblem.make(2, 16, 9, 11, 24, 3, 3, padding=1),
    ConvProblem.make(3, 32, 7, 8, 64, 3, 3, padding=((1, 0), (2, 1)), groups=2),
    ConvProblem.make(1, 16, 5, 6, 16, 3, 3, padding=((1, 1), (1, 2)), dtype="float64"),
    ConvProblem.make(2, 17, 6, 3, 19, 3, 3, padding=0, dtype="float64"),  # one tile column
    ConvProblem.parse("mb2ic16ih9iw8oc16oh6ow7kh3ph0pw1"),  # negative trailing padding
    ConvProblem.make(1, 24, 4, 4, 16, 3, 3, padding=3),  # tiles that read padding only
]


@pytest.mark.parametrize("p", WIDE, ids=str)
def test_winograd_bwd_w_channels_last_matches_torch(p):
    from convbench.kernels.cpu import winograd_weights_channels_last as wcl

    assert wcl.serves(dataclasses.replace(p, dir="bwd_w"))
    check_problem(WinogradKernel(), p, directions=("bwd_w", "bwd_wb"))


def test_winograd_bwd_w_channels_last_blocks_under_a_small_cap_agree_with_one_block():
    from convbench.kernels.cpu import winograd_weights_channels_last as wcl

    base = ConvProblem.make(3, 16, 13, 11, 20, 3, 3, padding=1, dtype="float64")
    p = dataclasses.replace(base, dir="bwd_wb", bias=True)
    rng = np.random.default_rng(9)
    x, dy = rng.standard_normal(base.input_shape), rng.standard_normal(base.output_shape)
    whole = WinogradKernel().prepare(p, x, dy, None)
    dw, db = whole()
    dw, db = dw.copy(), db.copy()
    small = WinogradKernel(workspace_cap=wcl.workspace_bytes(p, 10**9) // 4)
    call = small.prepare(p, x, dy, None)
    assert call.details["layout"] == "channels-last" and call.details["blocks"] > 3
    assert whole.details["blocks"] == 1
    assert small.workspace_bytes(p) <= small.workspace_cap
    got_dw, got_db = call()
    np.testing.assert_allclose(got_dw, dw, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got_db, db)
    assert set(call.details["phase_s"]) == {"input_transform", "gemm", "output_transform"}


def test_winograd_bwd_w_schedules_agree_and_per_thread_blocks_run_where_they_fit(monkeypatch):
    import numba

    from convbench.kernels.cpu import winograd_weights_channels_last as wcl

    monkeypatch.setattr(wcl, "THREAD_BLOCK_BYTES", 1 << 18)  # blocks of a few tile rows

    base = ConvProblem.make(3, 32, 30, 28, 32, 3, 3, padding=1, groups=2)
    p = dataclasses.replace(base, dir="bwd_wb", bias=True)
    rng = np.random.default_rng(11)
    x, dy = rng.standard_normal(base.input_shape), rng.standard_normal(base.output_shape)
    x, dy = x.astype(np.float32), dy.astype(np.float32)
    _, want_dw, want_db = torch_gradients(p, x, np.zeros(p.weight_shape, np.float32), dy)
    threads = numba.get_num_threads()
    call = WinogradKernel().prepare(p, x, dy, None)
    if threads > 1:  # at least two blocks per thread
        assert call.details["schedules"] == list(wcl.SCHEDULES)
        assert call.details["schedule"] in wcl.SCHEDULES
    else:
        assert call.details["schedules"] == ["blas"]
    for choice in call.details["schedules"]:
        call.details["schedule"] = choice
        dw, db = call()
        # float32 sums over 3 x 15 x 14 tiles in another order per schedule
        assert np.linalg.norm(dw - want_dw) / np.linalg.norm(want_dw) < 1e-6, choice
        np.testing.assert_allclose(db, want_db, rtol=1e-5)
        assert call.details["phase_s"]["gemm"] > 0
    # The team's own buffers stay under the cap, or that schedule does not run.
    small = wcl.thread_block(p, 10**9, 2)
    assert small is not None and 2 * wcl._Buffers.bytes_of(p, small) <= 10**9
    assert wcl.thread_block(p, 2 * wcl._Buffers.bytes_of(p, small) - 1, 2) != small
    assert wcl.thread_block(p, 1, 2) is None and wcl.thread_block(p, 10**9, 1) is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_channels_last_gradient_transform_computes_the_matrix_definition(dtype):
    from convbench.kernels.cpu import winograd_weights_channels_last as wcl

    rng = np.random.default_rng(10)
    count, rows, cols, k = 2, 3, 4, 5
    dyp = rng.standard_normal((count, 2 * rows, 2 * cols * k)).astype(dtype)
    u = np.empty((16, count * rows * cols, k), dtype)
    wcl.gradient_transform(dyp, u, rows, cols, 0, count * rows)
    tiles = dyp.reshape(count, rows, 2, cols, 2, k).transpose(0, 1, 3, 5, 2, 4)  # b,i,j,k,a,f
    want = wb.gradient_transform(tiles.astype(np.float64))
    np.testing.assert_allclose(u, want.reshape(count * rows * cols, k, 16).transpose(2, 0, 1),
                               rtol=0, atol=4 * np.finfo(dtype).eps * np.abs(dyp).max())


def test_winograd_accepts_every_3x3_stride1_dilation1_problem_and_names_each_refusal():
    kernel = WinogradKernel()
    for base in NAMED + random_problems(3, 20, winograd=True):
        for direction in DIRECTIONS:
            assert kernel.supports(dataclasses.replace(base, dir=direction, bias=True)) is None
    refused = [(ConvProblem.make(1, 2, 9, 9, 2, 5, 5), "needs a 3x3 filter, got 5x5"),
               (ConvProblem.make(1, 2, 9, 9, 2, 3, 3, stride=2), r"needs stride 1, got \(2, 2\)"),
               (ConvProblem.make(1, 2, 9, 9, 2, 3, 3, dilation=2),
                r"needs dilation 1, got \(2, 2\)")]
    for base, reason in refused:
        for direction, method in (("bwd_d", r"bwd_d \(F\(2x2,3x3\) on dy\)"),
                                  ("bwd_w", r"bwd_w \(F\(3x3,2x2\)\)")):
            p = dataclasses.replace(base, dir=direction)
            assert kernel.supports(p) is not None
            rng = np.random.default_rng(0)
            a = rng.standard_normal(p.output_shape if direction == "bwd_d" else p.input_shape)
            b = rng.standard_normal(p.weight_shape if direction == "bwd_d" else p.output_shape)
            with pytest.raises(UnsupportedProblem, match=f"winograd {method} {reason}"):
                kernel.prepare(p, a.astype(np.float32), b.astype(np.float32), None)


@pytest.mark.parametrize("algo", [FftKernel, WinogradKernel])
def test_calls_take_new_operands_and_reuse_the_weights(algo):
    """``call(dy)`` and ``call(x, dy)`` compute with the arrays given, not the prepared ones."""
    base = ConvProblem.make(2, 4, 7, 9, 6, 3, 3, padding=1, dtype="float64")
    rng = np.random.default_rng(4)
    x, x2 = rng.standard_normal((2, *base.input_shape))
    w = rng.standard_normal(base.weight_shape)
    dy, dy2 = rng.standard_normal((2, *base.output_shape))
    kernel = algo()
    assert kernel.takes_input_at_call and kernel.caches_weights
    call_d = kernel.prepare(dataclasses.replace(base, dir="bwd_d"), dy, w, None)
    call_w = kernel.prepare(dataclasses.replace(base, dir="bwd_w"), x, dy, None)
    expected_dx, expected_dw, _ = torch_gradients(base, x2, w, dy2)
    np.testing.assert_allclose(call_d(dy2), expected_dx, atol=1e-12)
    np.testing.assert_allclose(call_w(x2, dy2), expected_dw, atol=1e-11)
    assert call_d(dy2) is call_d(dy)  # the kernel's own output buffer


def test_winograd_bwd_d_runs_the_forward_kernel_with_its_filter_matrix():
    """bwd_d is the forward F(2x2,3x3) machinery: a fault planted in G reaches it."""
    class PlantedG(WinogradKernel):
        filter_matrix = WinogradKernel.filter_matrix * np.array([[1], [1], [1.01], [1]])

    base = ConvProblem.make(2, 8, 9, 9, 8, 3, 3, padding=1, dtype="float64")
    p = dataclasses.replace(base, dir="bwd_d")
    rng = np.random.default_rng(5)
    dy, w = rng.standard_normal(base.output_shape), rng.standard_normal(base.weight_shape)
    dx_ref = torch_gradients(base, np.zeros(base.input_shape), w, dy)[0]
    good = WinogradKernel().prepare(p, dy, w, None)()
    bad = PlantedG().prepare(p, dy, w, None)()
    assert np.abs(good - dx_ref).max() < 1e-12 < 1e-3 < np.abs(bad - dx_ref).max()


def test_f3x3_2x2_is_the_transposed_f2x2_3x3():
    """sum_xi A'^T[i, xi] G'[xi, j] B^T[xi, a] = [a == i + j]: exact 1-D correlation of 2 taps."""
    t = np.einsum("ix,xj,xa->ija", wb.GRAD_A_T, wb.GRAD_G, wb.GRAD_B_T)
    expected = np.zeros((3, 2, 4))
    for i in range(3):
        for j in range(2):
            expected[i, j, i + j] = 1
    np.testing.assert_array_equal(t, expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_weight_transforms_compute_the_matrix_definitions(dtype):
    rng = np.random.default_rng(6)
    n, c, k, h, w_, pt, pl = 2, 3, 2, 7, 6, 1, 2
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    p_out, q_out = h + 2 * pt - 2, w_ + 2 * pl - 2
    dy = rng.standard_normal((n, k, p_out, q_out)).astype(dtype)
    rows, cols = -(-p_out // 2), -(-q_out // 2)
    tiles = n * rows * cols
    xpad = np.zeros((n, c, 2 * rows + 2 + h, 2 * cols + 2 + w_))
    xpad[:, :, pt:pt + h, pl:pl + w_] = x
    dpad = np.zeros((n, k, 2 * rows, 2 * cols))
    dpad[:, :, :p_out, :q_out] = dy
    d = np.stack([xpad[b, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] for b in range(n)
                  for i in range(rows) for j in range(cols)], axis=1)
    e = np.stack([dpad[b, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2] for b in range(n)
                  for i in range(rows) for j in range(cols)], axis=1)
    v = np.zeros((16, c, tiles), dtype)
    cpu_wb.input_tiles(x, v, 0, n, 0, rows, cols, pt, pl)
    u = np.zeros((16, k, tiles), dtype)
    cpu_wb.gradient_tiles(dy, u, 0, n, 0, rows, cols)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(v, wb.input_transform(d).reshape(c, tiles, 16).transpose(2, 0, 1),
                               rtol=0, atol=4 * eps * np.abs(d).max())
    np.testing.assert_allclose(u, wb.gradient_transform(e).reshape(k, tiles, 16)
                               .transpose(2, 0, 1), rtol=0, atol=2 * eps * np.abs(e).max())


def test_winograd_bwd_w_tiles_under_a_small_cap_as_one_block():
    base = ConvProblem.make(5, 6, 17, 19, 8, 3, 3, padding=1, dtype="float64")
    p = dataclasses.replace(base, dir="bwd_w")
    rng = np.random.default_rng(7)
    x, dy = rng.standard_normal(base.input_shape), rng.standard_normal(base.output_shape)
    whole = WinogradKernel().prepare(p, x, dy, None)()
    floor = WinogradKernel(workspace_cap=1).workspace_bytes(p)  # one tile row of one image
    small = WinogradKernel(workspace_cap=max(20_000, floor))
    assert cpu_wb.plan_weight_blocks(p, small.workspace_cap)[:2] != (5, 9)
    assert small.workspace_bytes(p) <= small.workspace_cap
    np.testing.assert_allclose(small.prepare(p, x, dy, None)(), whole, rtol=1e-12, atol=1e-12)


def test_fft_backward_lengths_hold_every_image_without_aliasing():
    """The smallest alias-free lengths: L >= H + max(pad), L >= R_eff, L > (P-1) * stride."""
    for p in NAMED + STRIDED:
        for direction in ("bwd_d", "bwd_w"):
            plan = plan_fft_backward(dataclasses.replace(p, dir=direction), 2**28)
            (pt, pb), (pl, pr) = p.padding
            assert plan.lh >= max(p.ih + max(pt, pb), p.dil_h * (p.kh - 1) + 1,
                                  (p.oh - 1) * p.sh + 1)
            assert plan.lw >= max(p.iw + max(pl, pr), p.dil_w * (p.kw - 1) + 1,
                                  (p.ow - 1) * p.sw + 1)
    base = ConvProblem.make(6, 8, 20, 20, 8, 3, 3, padding=1, dtype="float64")
    for direction in ("bwd_d", "bwd_w"):
        p = dataclasses.replace(base, dir=direction)
        assert 1 < plan_fft_backward(p, 1_500_000).batch < p.mb  # the cap splits the batch
    check_problem(FftKernel(workspace_cap=1_500_000), base)


@pytest.mark.parametrize("algo", [FftKernel, WinogradKernel])
def test_zero_batch_gives_empty_and_zero_gradients(algo):
    base = ConvProblem.make(0, 4, 7, 9, 6, 3, 3, padding=1)
    dy, w = np.zeros(base.output_shape, np.float32), np.ones(base.weight_shape, np.float32)
    x = np.zeros(base.input_shape, np.float32)
    dx = algo().prepare(dataclasses.replace(base, dir="bwd_d"), dy, w, None)()
    dw, db = algo().prepare(dataclasses.replace(base, dir="bwd_wb", bias=True), x, dy, None)()
    assert dx.shape == base.input_shape
    assert not dw.any() and dw.shape == base.weight_shape and not db.any()


ONE_BY_ONE = [
    ConvProblem.make(2, 6, 9, 8, 4, 1, 1),
    ConvProblem.make(3, 4, 11, 10, 6, 1, 1, stride=2, groups=2, dtype="float64"),
    ConvProblem.make(2, 5, 8, 9, 3, 1, 1, stride=(3, 2), padding=((1, 0), (0, 2))),
]


@pytest.mark.parametrize("path", ["factored", "stored"])
@pytest.mark.parametrize("p", NAMED + STRIDED + ONE_BY_ONE, ids=str)
def test_fft_backward_tap_factored_and_stored_spectra_both_match_torch(p, path, monkeypatch):
    """Either FFT backward path, forced on every direction, gives torch's gradients."""
    from convbench.kernels.algorithms import fft as fft_algorithm

    most = 10**6 if path == "factored" else 0
    monkeypatch.setattr(fft_algorithm, "FACTORED_MAX_TAPS",
                        {"bwd_d": most, "bwd_w": most, "bwd_wb": most})
    assert all(fft_algorithm.tap_factored(dataclasses.replace(p, dir=d, bias=d == "bwd_wb"))
               == (path == "factored")
               for d in DIRECTIONS)
    check_problem(FftKernel(), p)


@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("p", NAMED + STRIDED + ONE_BY_ONE, ids=str)
def test_fft_tap_spectra_are_the_filter_spectra_of_each_tap(p, adjoint):
    """The stored spectra are the taps' DFT: sum_rs w[rs] E[f, rs], E from tap_spectra."""
    from convbench.kernels.algorithms import fft as fft_algorithm

    plan = plan_fft_backward(dataclasses.replace(p, dir="bwd_d"), 2**28)
    w = np.random.default_rng(3).standard_normal(p.weight_shape)
    placed = np.zeros((p.oc, p.ic // p.g, plan.lh, plan.lw))
    for r in range(p.kh):
        for s in range(p.kw):
            row, col = (r * p.dil_h - p.ph) % plan.lh, (s * p.dil_w - p.pw) % plan.lw
            placed[:, :, row, col] = w[:, :, r, s]
    expected = np.fft.rfft2(placed).reshape(p.g, p.oc // p.g, p.ic // p.g, plan.freqs) / 7
    taps = fft_algorithm.tap_spectra(p, plan, shift=(p.ph, p.pw))
    by_taps = np.einsum("kcq,fq->kcf", w.reshape(p.oc, p.ic // p.g, -1), taps) / 7
    np.testing.assert_allclose(by_taps.reshape(expected.shape), expected, rtol=0,
                               atol=1e-13 * np.abs(expected).max())
    expected = (expected.transpose(3, 0, 1, 2) if adjoint
                else np.conj(expected).transpose(3, 0, 2, 1))
    if adjoint:
        got = fft_algorithm.adjoint_filter_spectra(w, p, plan, np.float64, scale=1 / 7)
    else:
        got = fft_algorithm.filter_spectra(w, p, plan, np.float64, shift=(p.ph, p.pw),
                                           scale=1 / 7)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


def test_fft_tap_factored_1x1_backward_keeps_no_spectra():
    """A strided 1x1 layer: no K*C*F filter spectra, so a batch holds several images."""
    from convbench.kernels.algorithms import fft as fft_algorithm

    base = ConvProblem.parse("mb8ic256ih56oc512kh1sh2")  # ResNet-50 res3a_branch1
    kernel = FftKernel()
    for direction in ("bwd_d", "bwd_w"):
        p = dataclasses.replace(base, dir=direction)
        assert fft_algorithm.tap_factored(p)
        plan = kernel.plan(p)
        spectra = fft_algorithm.filter_bytes(p, plan.lh, plan.lw, p.itemsize)
        assert spectra > 10**9
        stored = plan_fft_backward(p, kernel.workspace_cap, factored=False)
        assert plan.batch > stored.batch == 1  # the stored spectra alone pass the cap
        assert kernel.workspace_bytes(p) < spectra / 4


def test_fft_tap_factored_bwd_w_stays_in_its_envelope_on_a_long_reduction():
    """Summing over 2*N*F frequency terms in float32 left FFT's envelope 2.7x behind here."""
    from convbench.kernels.algorithms import fft as fft_algorithm

    base = ConvProblem.make(2, 16, 32, 32, 16, 3, 3, padding=1)
    assert fft_algorithm.tap_factored(dataclasses.replace(base, dir="bwd_w"))
    for seed in range(3):
        check_problem(FftKernel(), base, seed=seed, directions=("bwd_w", "bwd_wb"))
