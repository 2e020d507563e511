"""Winograd F(m, 3) from interpolation points: the construction, the kernels, their envelopes."""

import statistics
from fractions import Fraction

import numpy as np
import pytest
from conftest import envelope_ratio, make_task, random_inputs, rel_l2

import convbench
from convbench import ConvProblem, UnsupportedProblem
from convbench.kernels.algorithms import winograd as algorithm
from convbench.kernels.algorithms.winograd import (
    POINT_SETS,
    cook_toom,
    round_fraction,
    tile_transforms,
    winograd_conv2d,
)
from convbench.kernels.cpu.winograd_tiles import Winograd4x4Kernel, Winograd6x6Kernel
from convbench.measure.compare import WINOGRAD_GEMM_WEIGHT, winograd_growth
from convbench.measure.runner import measure
from convbench.problem.reference import reference_for
from convbench.testing import assert_conv_close

F = Fraction
#: Lavin & Gray (2016), eq. (7) and (11): F(2x2,3x3) and F(4x4,3x3).
PUBLISHED = {
    2: {"b_t": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        "g": [[1, 0, 0], [F(1, 2), F(1, 2), F(1, 2)], [F(1, 2), F(-1, 2), F(1, 2)], [0, 0, 1]],
        "a_t": [[1, 1, 1, 0], [0, 1, -1, -1]]},
    4: {"b_t": [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        "g": [[F(1, 4), 0, 0], [F(-1, 6), F(-1, 6), F(-1, 6)], [F(-1, 6), F(1, 6), F(-1, 6)],
              [F(1, 24), F(1, 12), F(1, 6)], [F(1, 24), F(-1, 12), F(1, 6)], [0, 0, 1]],
        "a_t": [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]]},
}
TILE_KERNELS = ["winograd_4x4", "winograd_6x6"]


@pytest.mark.parametrize("m", [2, 4])
def test_standard_points_reproduce_the_published_matrices(m):
    tf = tile_transforms(m, "standard")
    for name in ("b_t", "g", "a_t"):
        exact = [[F(v) for v in row] for row in PUBLISHED[m][name]]
        assert [list(row) for row in getattr(tf, f"exact_{name}")] == exact, name
    assert np.array_equal(tile_transforms(2, "standard").b_t, algorithm.B_T)
    assert np.array_equal(tile_transforms(2, "standard").g, algorithm.G)
    assert np.array_equal(tile_transforms(2, "standard").a_t, algorithm.A_T)


@pytest.mark.parametrize("m, points", [(m, name) for m in POINT_SETS for name in POINT_SETS[m]]
                         + [(3, ("0", "1", "-1", "3")), (5, ("0", "1", "-1", "2", "-2", "1/3"))])
def test_every_point_set_computes_correlation_exactly_in_rationals(m, points):
    tf = cook_toom(m, 3, POINT_SETS[m][points] if isinstance(points, str) else points)
    rng = np.random.default_rng(m)
    for _ in range(5):
        d = [F(int(v)) for v in rng.integers(-9, 10, tf.alpha)]
        g = [F(int(v)) for v in rng.integers(-9, 10, 3)]
        u = [sum(tf.exact_g[i][k] * g[k] for k in range(3)) for i in range(tf.alpha)]
        v = [sum(tf.exact_b_t[i][a] * d[a] for a in range(tf.alpha)) for i in range(tf.alpha)]
        y = [sum(tf.exact_a_t[p][i] * u[i] * v[i] for i in range(tf.alpha)) for p in range(m)]
        assert y == [sum(g[k] * d[p + k] for k in range(3)) for p in range(m)]


def test_construction_refuses_wrong_points():
    with pytest.raises(ValueError, match="F\\(4,3\\) needs 5 finite points, got 4"):
        cook_toom(4, 3, (0, 1, -1, 2))
    with pytest.raises(ValueError, match="must be distinct"):
        cook_toom(2, 3, (0, 1, 1))
    with pytest.raises(ValueError, match="point sets are"):
        tile_transforms(6, "nova")


def test_matrices_are_rounded_once_from_the_rationals():
    # 1 + 2^-24 + 2^-60: float64 rounds it to the float32 midpoint 1 + 2^-24, which
    # float32 would round (to even) down to 1; the nearest float32 is 1 + 2^-23.
    q = 1 + F(1, 2**24) + F(1, 2**60)
    assert np.float32(float(q)) == np.float32(1)
    assert round_fraction(q, np.float32) == np.float32(1 + 2.0**-23)
    assert round_fraction(F(1, 3)) == 1 / 3
    g32 = tile_transforms(6, "standard").matrices(np.float32)[1]
    assert g32.dtype == np.float32 and g32[1, 0] == np.float32(-2 / 9)


def test_growth_factors_come_from_the_matrices_and_grow_with_the_tile():
    growth = {m: winograd_growth(convbench.get_kernel(name).error_model(None).transforms)
              for m, name in ((4, "winograd_4x4"), (6, "winograd_6x6"))}
    f2 = tile_transforms(2, "standard")
    growth[2] = winograd_growth(convbench.ErrorModel("winograd", transforms=(
        f2.a_t, f2.g, f2.b_t)).transforms)
    assert growth[2].gemm_weight == WINOGRAD_GEMM_WEIGHT  # the F(2x2,3x3) constant
    assert growth[2].gemm_weight < growth[4].gemm_weight < growth[6].gemm_weight
    assert growth[2].transform_weight < growth[4].transform_weight < growth[6].transform_weight


PROBLEMS = [
    (dict(n=1, c=4, h=9, w=11, k=5, padding=1), "float32"),
    (dict(n=2, c=3, h=13, w=7, k=6, padding=0), "float32"),
    (dict(n=3, c=6, h=10, w=10, k=4, padding=2), "float64"),
    (dict(n=2, c=4, h=9, w=8, k=6, padding=((0, 2), (3, 1))), "float32"),
    (dict(n=1, c=4, h=8, w=9, k=6, padding=((2, 0), (0, 1))), "float64"),
    (dict(n=2, c=6, h=11, w=5, k=12, padding=1, groups=6), "float32"),  # depthwise x2
    (dict(n=1, c=8, h=7, w=13, k=8, padding=1, groups=2), "float64"),
    (dict(n=3, c=5, h=3, w=4, k=3, padding=2), "float32"),  # one border tile
    (dict(n=1, c=16, h=29, w=31, k=8, padding=1), "float32"),  # many tiles, odd sizes
]


@pytest.mark.parametrize("algo", TILE_KERNELS)
@pytest.mark.parametrize("case, dtype", PROBLEMS)
def test_tile_kernels_agree_with_float64_within_their_envelopes(algo, case, dtype, case_seed):
    case = dict(case)
    p = ConvProblem.make(case.pop("n"), case.pop("c"), case.pop("h"), case.pop("w"),
                         case.pop("k"), 3, 3, bias=True, dtype=dtype, **case)
    x, w, b = random_inputs(p, seed=case_seed)
    kernel = convbench.get_kernel(algo)
    y = kernel.prepare(p, x, w, b)()
    assert y.dtype == np.dtype(dtype) and y.shape == p.output_shape
    assert envelope_ratio(kernel, p, x, w, b, y) <= 1
    assert_conv_close(y, x, w, b, padding=p.padding, groups=p.g, algo=algo)
    # The NumPy definition computes the same thing (other summation orders).
    want = winograd_conv2d(x.astype(np.float64), w.astype(np.float64), kernel.transforms,
                           p.padding, p.g) + b.astype(np.float64)[:, None, None]
    assert rel_l2(y, want) < (1e-4 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("algo", TILE_KERNELS)
def test_tile_kernels_refuse_other_problems_with_a_reason(algo):
    kernel = convbench.get_kernel(algo)
    label = kernel.transforms.label
    p = ConvProblem.make(1, 4, 9, 9, 4, 3, 3, padding=1)
    assert kernel.supports(p) is None
    for changed, reason in ((p.with_(kh=5, kw=5), "needs a 3x3 filter, got 5x5"),
                            (p.with_(sh=2, sw=2), "needs stride 1, got (2, 2)"),
                            (p.with_(dil_h=2, dil_w=2), "needs dilation 1, got (2, 2)"),
                            (p.with_(kh=1, kw=3), "needs a 3x3 filter, got 1x3")):
        assert kernel.supports(changed) == f"winograd {label} {reason}"
        x, w, b = random_inputs(changed)
        with pytest.raises(UnsupportedProblem, match=reason.replace("(", "\\(")
                           .replace(")", "\\)")):
            kernel.prepare(changed, x, w, b)
    with pytest.raises(UnsupportedProblem, match="float16 is GPU-only"):
        kernel.prepare(p.with_(dtype="float16"), *random_inputs(p))


@pytest.mark.parametrize("cls", [Winograd4x4Kernel, Winograd6x6Kernel])
def test_blocks_of_tiles_under_small_workspace_caps_are_correct(cls):
    p = ConvProblem.make(3, 6, 17, 19, 8, 3, 3, padding=1, bias=True)
    x, w, b = random_inputs(p)
    default = cls()
    floor = cls(workspace_cap=1).workspace_bytes(p)  # one tile row of one image
    assert cls(workspace_cap=1).supports(p).startswith(f"workspace: needs {floor} bytes")
    for cap in (default.workspace_bytes(p) // 3, 30_000, floor):
        kernel = cls(workspace_cap=cap)
        if cap < floor:
            assert kernel.supports(p).startswith(f"workspace: needs {floor} bytes")
            continue
        assert kernel.plan(p) != default.plan(p) and kernel.workspace_bytes(p) <= cap
        call = kernel.prepare(p, x, w, b)
        y = call()
        assert envelope_ratio(kernel, p, x, w, b, y) <= 1, cap
        assert call.details["blocks"] > 1


def test_phase_times_reach_the_record_details():
    rec = measure(make_task("mb1ic8ih12oc8kh3ph1", "winograd_6x6", mode="both"))
    assert rec.status == "ok", rec.get("reason")
    phases = rec["details"]["phase_s"]
    assert set(phases) == {"input_transform", "gemm", "output_transform"}
    assert all(v > 0 for v in phases.values())
    assert rec["details"]["tile"] == "F(6x6,3x3)" and rec["details"]["points"] == "convbench"
    assert rec["error_model"]["transforms"] is not None
    assert rec.error("envelope_ratio") <= 1


def _vgg16_small(oc=32, size=28):
    """VGG-16's 3x3 layers on 28x28 images with 32 output channels (the same reductions)."""
    from convbench.problem.suites import load_suite

    return [layer.problem.with_(ih=size, iw=size, oc=oc)
            for layer in load_suite("vgg16", batch=1, dtype="float32")]


def test_error_rises_with_the_tile_over_vgg16():
    kernels = {"F2": convbench.get_kernel("winograd"), "F4": convbench.get_kernel("winograd_4x4"),
               "F6": convbench.get_kernel("winograd_6x6"),
               "F6 standard": Winograd6x6Kernel(points="standard")}
    errors = {name: [] for name in kernels}
    for p in _vgg16_small():
        x, w, _ = random_inputs(p)
        ref = reference_for(p, x, w)
        for name, kernel in kernels.items():
            errors[name].append(rel_l2(kernel.prepare(p, x, w, None)(), ref))
    median = {name: statistics.median(e) for name, e in errors.items()}
    assert median["F2"] < median["F4"] < min(median["F6"], median["F6 standard"]), median


# ------------------------------------------------ the GPU kernels on the host emulator
def _emulated(cls, **kw):
    from convbench.kernels.gpu.runtime import HostRuntime

    runtime = HostRuntime()
    if runtime.unavailable_reason() is not None:
        pytest.skip(str(runtime.unavailable_reason()))
    return cls(runtime, **kw)


@pytest.mark.parametrize("tile", [4, 6])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_emulated_gpu_tiles_match_the_cpu_kernel_and_their_envelope(tile, dtype):
    from convbench.kernels.gpu.winograd_tiles import GpuWinograd4x4Kernel, GpuWinograd6x6Kernel

    cls = GpuWinograd4x4Kernel if tile == 4 else GpuWinograd6x6Kernel
    p = ConvProblem.make(2, 6, 11, 9, 4, 3, 3, padding=((0, 2), (1, 1)), bias=True, groups=2,
                         dtype=dtype)
    x, w, b = random_inputs(p.with_(dtype="float32"))
    x, w, b = (a.astype(dtype) for a in (x, w, b))
    whole = _emulated(cls).prepare(p, x, w, b)()
    assert whole.dtype == np.dtype(dtype) and whole.shape == p.output_shape
    kernel = _emulated(cls, workspace_cap=6000)
    assert kernel.plan(p)[:2] != (p.mb, -(-p.oh // tile)), "the cap did not tile"
    tiled = kernel.prepare(p, x, w, b)()
    for y in (whole, tiled):
        assert envelope_ratio(kernel, p, x, w, b, y) <= 1
    if dtype != "float16":
        cpu = convbench.get_kernel(f"winograd_{tile}x{tile}").prepare(p, x, w, b)()
        assert rel_l2(whole, cpu) < (1e-5 if dtype == "float32" else 1e-13)
    else:
        assert rel_l2(whole, reference_for(p, x, w, b)) <= 2e-2


def test_emulated_gpu_tiles_refuse_what_the_cpu_ones_refuse():
    from convbench.kernels.gpu.winograd_tiles import GpuWinograd6x6Kernel

    kernel = _emulated(GpuWinograd6x6Kernel)
    p = ConvProblem.make(1, 4, 9, 9, 4, 3, 3, stride=2, padding=1)
    assert kernel.supports(p) == "winograd F(6x6,3x3) needs stride 1, got (2, 2)"
    with pytest.raises(UnsupportedProblem, match="needs stride 1"):
        kernel.prepare(p, *random_inputs(p))
