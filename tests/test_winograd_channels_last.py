"""Winograd's channels-last CPU path: agreement with the planar one and with float64, blocks,
GEMM threading, the layout choice, non-finite inputs, planted faults and bwd_d through it."""

import dataclasses

import numpy as np
import pytest
from backward_reference import torch_gradients
from conftest import envelope_ratio, random_inputs, rel_l2

import convbench
from convbench import ConvProblem
from convbench.kernels.algorithms.winograd import tile_transforms, winograd_conv2d
from convbench.kernels.cpu import winograd_channels_last as channels_last
from convbench.kernels.cpu.base import num_threads
from convbench.kernels.cpu.winograd import WinogradKernel
from convbench.kernels.cpu.winograd_tiles import (
    Winograd4x4Kernel,
    Winograd6x6Kernel,
    filter_transform,
)
from convbench.testing import assert_conv_close

KERNELS = [WinogradKernel, Winograd4x4Kernel, Winograd6x6Kernel]
TILE = {WinogradKernel: 2, Winograd4x4Kernel: 4, Winograd6x6Kernel: 6}

PROBLEMS = [
    (dict(n=1, c=16, h=9, w=11, k=8, padding=1), "float32"),
    (dict(n=2, c=3, h=13, w=7, k=6, padding=0), "float32"),  # few channels, forced layouts
    (dict(n=3, c=20, h=10, w=10, k=12, padding=2), "float64"),
    (dict(n=2, c=16, h=9, w=8, k=24, padding=((0, 2), (3, 1))), "float32"),
    (dict(n=1, c=17, h=8, w=9, k=5, padding=((2, 0), (0, 1))), "float64"),
    (dict(n=2, c=32, h=11, w=5, k=32, padding=1, groups=32), "float32"),  # depthwise
    (dict(n=1, c=32, h=7, w=13, k=64, padding=1, groups=32), "float64"),  # multiplier 2
    (dict(n=1, c=32, h=12, w=9, k=16, padding=1, groups=2), "float32"),
    (dict(n=3, c=17, h=3, w=4, k=5, padding=2), "float32"),  # one border tile
    (dict(n=1, c=24, h=29, w=31, k=16, padding=1), "float32"),  # many tiles, odd sizes
]


def _problem(case, dtype, bias=True):
    case = dict(case)
    return ConvProblem.make(case.pop("n"), case.pop("c"), case.pop("h"), case.pop("w"),
                            case.pop("k"), 3, 3, bias=bias, dtype=dtype, **case)


def _definition(p, x, w, b, tile):
    """The Winograd sums in float64, with the point set's own matrices."""
    tf = tile_transforms(tile, "standard" if tile == 2 else None)
    y = winograd_conv2d(x.astype(np.float64), w.astype(np.float64), tf, p.padding, p.g)
    return y + b.astype(np.float64)[:, None, None]


@pytest.mark.parametrize("layout", ["channels-last", "planar"])
@pytest.mark.parametrize("cls", KERNELS)
@pytest.mark.parametrize("case, dtype", PROBLEMS)
def test_both_layouts_agree_with_float64_within_the_envelope(cls, layout, case, dtype):
    p = _problem(case, dtype)
    x, w, b = random_inputs(p, seed=len(str(p)))
    kernel = cls(layout=layout)
    call = kernel.prepare(p, x, w, b)
    y = call()
    assert y.dtype == np.dtype(dtype) and y.shape == p.output_shape
    assert envelope_ratio(kernel, p, x, w, b, y) <= 1
    assert_conv_close(y, x, w, b, padding=p.padding, groups=p.g, algo=kernel.name)
    assert rel_l2(y, _definition(p, x, w, b, TILE[cls])) < (1e-4 if dtype == "float32"
                                                               else 1e-12)
    details = getattr(call, "details", None) or {}
    if layout == "channels-last":
        assert details["layout"] == "channels-last"
        assert details["schedule"] in details["schedules"]
        assert set(details["schedules"]) <= set(channels_last.SCHEDULES)
    elif cls is not WinogradKernel:  # F(2x2,3x3)'s planar path records no details
        assert details["layout"] == "planar"


@pytest.mark.parametrize("layout", ["channels-last", "planar"])
@pytest.mark.parametrize("cls", KERNELS)
def test_negative_trailing_padding_leaves_unread_rows_and_columns_alone(cls, layout):
    """Output sizes that read neither the last input row nor the last three columns
    (bwd_d of a layer padded by 3 is such a problem)."""
    p = ConvProblem.parse("mb2ic16ih11iw13oc8oh8ow9kh3ph0pw1")
    assert p.padding == ((0, -1), (1, -3))
    x, w, b = random_inputs(p, seed=11)
    kernel = cls(layout=layout)
    y = kernel.prepare(p, x, w, b)()
    assert envelope_ratio(kernel, p, x, w, b, y) <= 1
    assert_conv_close(y, x[:, :, :10, :10], w, b, padding=((0, 0), (1, 0)), groups=p.g,
                      algo=kernel.name)


@pytest.mark.parametrize("cls", KERNELS)
def test_auto_takes_channels_last_from_min_channels_on(cls):
    kernel = cls()
    assert kernel.layout == "auto"
    few = ConvProblem.make(1, channels_last.MIN_CHANNELS - 1, 10, 10, 8, 3, 3, padding=1)
    enough = few.with_(ic=channels_last.MIN_CHANNELS)
    assert not channels_last.serves(few) and channels_last.serves(enough)
    for p, layout in ((few, "planar"), (enough, "channels-last")):
        x, w, _ = random_inputs(p)
        assert kernel.plan(p) == cls(layout=layout).plan(p)
        call = kernel.prepare(p, x, w, None)
        if layout == "channels-last" or cls is not WinogradKernel:
            assert call.details["layout"] == layout
    assert channels_last.serves(few, "channels-last") and not channels_last.serves(enough,
                                                                                   "planar")


@pytest.mark.parametrize("cls", KERNELS)
def test_an_unknown_layout_is_refused_naming_the_layouts(cls):
    with pytest.raises(ValueError, match="layout must be one of auto, channels-last, planar, "
                                         "got 'nhwc'"):
        cls(layout="nhwc")


@pytest.mark.parametrize("cls", KERNELS)
def test_blocks_of_images_and_of_rows_under_small_caps_are_correct(cls):
    p = ConvProblem.make(3, 16, 37, 19, 16, 3, 3, padding=1, bias=True)
    x, w, b = random_inputs(p)
    m = TILE[cls]
    default = cls(layout="channels-last")
    tile_rows, tile_cols = -(-p.oh // m), -(-p.ow // m)
    assert default.plan(p) == (3, tile_rows, tile_cols)
    y_one = default.prepare(p, x, w, b)()
    u_bytes = (m + 2) ** 2 * p.oc * p.ic * p.itemsize
    one_image = default.workspace_bytes(p.with_(mb=1))
    seen = set()
    # A block of a single tile row is the floor: below it the kernel refuses (u_bytes + 1).
    floor = cls(workspace_cap=1, layout="channels-last").workspace_bytes(p)
    assert cls(workspace_cap=u_bytes + 1, layout="channels-last").supports(p).startswith(
        f"workspace: needs {floor} bytes")
    for cap in (one_image + u_bytes // 2, (one_image + u_bytes) // 2, floor):
        kernel = cls(workspace_cap=cap, layout="channels-last")
        nb, rows, cols = kernel.plan(p)
        seen.add((nb, rows))
        assert cols == tile_cols and nb * rows < 3 * tile_rows
        assert kernel.workspace_bytes(p) <= cap
        call = kernel.prepare(p, x, w, b)
        y = call()
        planned = -(-3 // nb) * -(-tile_rows // rows)
        if call.details["schedule"] == "blocks":  # each thread's blocks are smaller still
            assert call.details["blocks"] >= planned > 1
        else:
            assert call.details["blocks"] == planned > 1
        assert envelope_ratio(kernel, p, x, w, b, y) <= 1, cap
        # Other blocks sum in other orders: within float32's own F(6x6,3x3) error (~5e-6).
        assert rel_l2(y, y_one) < 1e-5
    assert (1, tile_rows) in seen and any(rows < tile_rows for _, rows in seen)


def test_the_default_cap_holds_for_a_large_layer():
    """VGG-16 conv1_2 at batch 32: the padded input is staged per block, not whole."""
    p = ConvProblem.make(32, 64, 224, 224, 64, 3, 3, padding=1)
    for cls in KERNELS:
        kernel = cls(layout="channels-last")
        assert kernel.workspace_bytes(p) <= kernel.workspace_cap, cls.__name__
        nb, rows, _ = kernel.plan(p)
        assert nb * rows < 32 * -(-p.oh // TILE[cls])


@pytest.mark.parametrize("cls", [WinogradKernel, Winograd6x6Kernel])
def test_every_schedule_computes_the_same_layer(cls):
    p = ConvProblem.make(2, 32, 56, 56, 48, 3, 3, padding=1, groups=2, bias=True)
    x, w, b = random_inputs(p, seed=7)
    call = cls(layout="channels-last").prepare(p, x, w, b)
    tried = call.details["schedules"]
    assert tried[:2] == ["blas", "team"]
    if num_threads() > 1:  # per-thread blocks: at least two cache-sized blocks per thread
        assert tried == list(channels_last.SCHEDULES)
    outputs = {}
    for choice in tried:
        call.details["schedule"] = choice
        outputs[choice] = call().copy()
        assert call.details["phase_s"]["gemm"] > 0
    for choice in tried:
        # Other GEMM splits sum in other orders: within float32's own F(6x6,3x3) error.
        assert rel_l2(outputs[choice], outputs["blas"]) < 1e-5, choice
        assert envelope_ratio(cls(), p, x, w, b, outputs[choice]) <= 1, choice


def test_without_a_cap_or_an_input_the_call_runs_on_blas_threads():
    p = ConvProblem.make(1, 16, 64, 64, 16, 3, 3, padding=1)
    x, w, _ = random_inputs(p)
    kernel = Winograd4x4Kernel(layout="channels-last")
    a_t, g_matrix, b_t = kernel.matrices(p.dtype)
    u = filter_transform(w, 1, g_matrix)
    call = channels_last.prepare_forward(p, 4, a_t, b_t, channels_last.gemm_layout(u),
                                         np.zeros(16, np.float32),
                                         kernel.plan(p), {})
    assert call.details["schedule"] == "blas" and call.details["schedules"] == ["blas", "team"]
    assert_conv_close(call(x), x, w, None, padding=1, algo="winograd_4x4")


def test_a_new_input_at_call_replaces_the_prepared_one():
    p = ConvProblem.make(2, 16, 10, 12, 16, 3, 3, padding=1)
    x, w, _ = random_inputs(p)
    x2, _, _ = random_inputs(p, seed=1)
    call = Winograd4x4Kernel(layout="channels-last").prepare(p, x, w, None)
    y2 = call(x2).copy()
    assert_conv_close(y2, x2, w, None, padding=1, algo="winograd_4x4")
    assert_conv_close(call(), x, w, None, padding=1, algo="winograd_4x4")


def _poisoned(channels, dtype):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (3, channels, 12, 10)).astype(dtype)  # image 2 stays clean
    x[0, 1, 5, 3] = np.nan
    x[1, 2, 0, 9] = np.inf
    x[1, channels - 1, 11, 0] = -np.inf
    w = rng.uniform(-1, 1, (8, channels, 3, 3)).astype(dtype)
    return x, w


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_f2x2_channels_last_propagates_nan_inf_exactly_like_the_reference(dtype):
    x, w = _poisoned(16, dtype)
    ref = convbench.reference(x, w, padding=1)
    y = convbench.conv2d(x, w, padding=1, algo="winograd")
    assert (~np.isfinite(ref)).sum() > 0
    np.testing.assert_array_equal(np.isfinite(y), np.isfinite(ref))
    assert_conv_close(y[2:], x[2:], w, padding=1, algo="winograd")


@pytest.mark.parametrize("algo", ["winograd_4x4", "winograd_6x6"])
def test_larger_tiles_never_lose_a_nan_or_inf(algo):
    """A larger tile's transforms mix its whole tile: a NaN spreads over it, never is lost."""
    x, w = _poisoned(16, np.float32)
    ref = convbench.reference(x, w, padding=1)
    y = convbench.conv2d(x, w, padding=1, algo=algo)
    assert np.all(~np.isfinite(y[~np.isfinite(ref)]))
    assert np.all(np.isfinite(y[2]))
    assert_conv_close(y[2:], x[2:], w, padding=1, algo=algo)


def test_planted_transform_faults_are_caught_on_the_channels_last_path():
    import planted_faults

    p = ConvProblem.make(2, 32, 12, 12, 32, 3, 3, padding=1, bias=True)
    x, w, b = random_inputs(p)
    for fault in (planted_faults.WinogradPerturbedCoefficient(),
                  planted_faults.Winograd4x4WrongCoefficient(),
                  planted_faults.Winograd6x6WrongCoefficient()):
        assert fault.layout == "auto" and channels_last.serves(p)
        call = fault.prepare(p, x, w, b)
        assert call.details["layout"] == "channels-last"
        original = convbench.get_kernel(fault.name)
        assert envelope_ratio(original, p, x, w, b, call()) > 10, fault.fault


@pytest.mark.parametrize("layout", ["channels-last", "planar"])
def test_bwd_d_through_either_layout_matches_torch(layout):
    base = ConvProblem.make(2, 24, 9, 11, 32, 3, 3, padding=1, dtype="float64")
    p = dataclasses.replace(base, dir="bwd_d")
    rng = np.random.default_rng(5)
    dy, w = rng.standard_normal(base.output_shape), rng.standard_normal(base.weight_shape)
    dx_ref = torch_gradients(base, np.zeros(base.input_shape), w, dy)[0]
    dx = WinogradKernel(layout=layout).prepare(p, dy, w, None)()
    assert np.abs(dx - dx_ref).max() < 1e-11


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels", [16, 17, 64])
def test_the_f2_transforms_equal_the_generic_ones_bit_for_bit(dtype, channels):
    """Specialized F(2x2,3x3) transforms: the same sums in the same order, NaN, Inf and -0 too."""
    rng = np.random.default_rng(channels)
    n_rows, n_cols, images = 3, 5, 2
    xp = rng.standard_normal((images, 2 * n_rows + 2, (2 * n_cols + 2) * channels)).astype(dtype)
    xp[0, 1, 5], xp[1, 2, 7], xp[0, 3, :channels] = np.nan, np.inf, -0.0
    b_t = channels_last.F2_B_T.astype(dtype)
    tiles = images * n_rows * n_cols
    generic, special = (np.empty((16, tiles, channels), dtype) for _ in range(2))
    channels_last.input_transform(xp, generic, b_t, 2, n_rows, n_cols, 0, images * n_rows)
    channels_last.input_transform_f2(xp, special, b_t, 2, n_rows, n_cols, 0, images * n_rows)
    bits = f"u{np.dtype(dtype).itemsize}"
    assert np.array_equal(generic.view(bits), special.view(bits))
    mm = rng.standard_normal((16, tiles, channels)).astype(dtype)
    mm[3, 2, 1], mm[5, 1, :], mm[9, 0, 2] = np.nan, -0.0, -np.inf
    a_t, bias = channels_last.F2_A_T.astype(dtype), rng.standard_normal(channels).astype(dtype)
    shape = (images, channels, 2 * n_rows - 1, 2 * n_cols - 1)  # border tiles stick out
    y_generic, y_special = np.zeros(shape, dtype), np.zeros(shape, dtype)
    args = (0, images, 0, n_rows, n_cols, 0, images * n_rows)
    channels_last.output_transform(mm, a_t, bias, y_generic, *args)
    channels_last.output_transform_f2(mm, a_t, bias, y_special, *args)
    assert np.array_equal(y_generic.view(bits), y_special.view(bits))


def test_only_f2s_own_matrices_take_the_specialized_transforms():
    a_t, b_t = channels_last.F2_A_T.astype(np.float32), channels_last.F2_B_T.astype(np.float32)
    assert channels_last.is_f2(a_t, b_t)
    wrong = b_t.copy()
    wrong[1, 2] *= 1 + 1e-3  # a planted fault must reach the generic path
    assert not channels_last.is_f2(a_t, wrong)
    four = tile_transforms(4).matrices("float32")
    assert not channels_last.is_f2(four[0], four[2])
