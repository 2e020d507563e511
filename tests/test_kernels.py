"""Every CPU kernel against the float64 reference over a parametrized grid."""

import numpy as np
import pytest
from conftest import documented_refusal, envelope_ratio, random_inputs
from hypothesis import given, settings
from hypothesis import strategies as st
from problem_grid import GRID

import convbench
from convbench import ConvProblem, UnsupportedProblem, registry

CPU_KERNELS = ["direct", "im2col", "fft", "winograd"]




@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("algo", CPU_KERNELS)
@pytest.mark.parametrize("shape, kwargs", GRID)
def test_kernel_matches_reference(shape, kwargs, algo, dtype):
    p = ConvProblem.make(*shape, dtype=dtype, **kwargs)
    kernel = convbench.get_kernel(algo, "cpu")
    reason = kernel.supports(p)
    if reason is not None:
        assert algo == "winograd", f"{algo} must support every combination: {reason}"
        with pytest.raises(UnsupportedProblem, match="winograd F\\(2x2,3x3\\) needs"):
            convbench.conv2d(*random_inputs(p), **_torch_args(p, kwargs), algo=algo)
        return
    x, w, b = random_inputs(p)
    y = convbench.conv2d(x, w, b, **_torch_args(p, kwargs), algo=algo)
    assert y.shape == p.output_shape and y.dtype == np.dtype(dtype)
    ratio = envelope_ratio(kernel, p, x, w, b, y)
    assert ratio <= 1, f"{algo} {p}: {ratio:.3g} of its error envelope"


def _torch_args(p, kwargs):
    keys = ("stride", "padding", "dilation", "groups")
    return {key: kwargs[key] for key in keys if key in kwargs}


def test_grid_covers_what_the_issue_names():
    kwargs = [k for _, k in (c.values for c in GRID)]
    shapes = [s for s, _ in (c.values for c in GRID)]
    assert {k.get("stride", 1) for k in kwargs} >= {1, 2, 3}
    assert {k.get("padding", 0) for k in kwargs if not isinstance(k.get("padding"), tuple)} \
        >= {0, 1, 2, 3, "same", "valid"}
    assert {k.get("dilation", 1) for k in kwargs} >= {1, 2, 3}
    assert {(s[-2], s[-1]) for s in shapes} >= {(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1),
                                                (11, 11)}
    assert {s[0] for s in shapes} >= {1, 2, 3}
    assert any(k.get("groups", 1) == s[1] > 1 for s, k in zip(shapes, kwargs, strict=True))


@st.composite
def problems(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 4))
    kg = draw(st.sampled_from([1, 2, 3, 4, 17, 33]))  # >= 16 reaches direct's channel order
    r, s = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if stride == (1, 1) and draw(st.booleans()):
        padding = "same"
    else:
        padding = ((draw(st.integers(0, 3)), draw(st.integers(0, 3))),
                   (draw(st.integers(0, 3)), draw(st.integers(0, 3))))
    h = draw(st.integers(dilation[0] * (r - 1) + 1 if padding != "same" else 1, 16))
    w = draw(st.integers(dilation[1] * (s - 1) + 1 if padding != "same" else 1, 16))
    return ConvProblem.make(draw(st.integers(1, 3)), cg * groups, h, w, kg * groups, r, s,
                            stride=stride, padding=padding, dilation=dilation, groups=groups,
                            bias=draw(st.booleans()),
                            dtype=draw(st.sampled_from(["float32", "float64"])))


def every_supporting_kernel_matches_reference(p, seed):
    x, w, b = random_inputs(p, seed)
    ran = 0
    for kernel in registry.kernels("cpu", kind="kernel"):
        if documented_refusal(kernel, p) is not None:
            continue
        y = kernel.prepare(p, x, w, b)()
        ratio = envelope_ratio(kernel, p, x, w, b, y)
        assert ratio <= 1, f"{kernel.name} {p}: {ratio:.3g} of its error envelope"
        ran += 1
    assert ran >= 3  # direct, im2col and fft run everything


#: Examples of the fuzz in the fast tier; the slow tier draws Hypothesis's default (100).
FAST_EXAMPLES = 10


@settings(max_examples=FAST_EXAMPLES)
@given(problems(), st.integers(0, 2**32 - 1))
def test_property_every_supporting_kernel_matches_reference(p, seed):
    every_supporting_kernel_matches_reference(p, seed)


@pytest.mark.slow
@given(problems(), st.integers(0, 2**32 - 1))
def test_property_every_supporting_kernel_matches_reference_at_full_size(p, seed):
    every_supporting_kernel_matches_reference(p, seed)


def test_workspace_tiling_paths_are_exact():
    """Tiny caps force several images per tile with a remainder, and row bands; a cap
    below the smallest tile is refused with that tile's bytes, which then run."""
    from convbench.contract import WORKSPACE_REFUSAL
    from convbench.kernels.cpu.fft import FftKernel
    from convbench.kernels.cpu.im2col import Im2colKernel
    from convbench.kernels.cpu.winograd import WinogradKernel

    p = ConvProblem.make(5, 6, 17, 19, 8, 3, 3, padding=1, bias=True)
    x, w, b = random_inputs(p)
    for cls in (Im2colKernel, WinogradKernel, FftKernel):
        default = cls()
        smallest = _smallest_tile(default, p)
        for cap in (default.workspace_bytes(p) // 3, 20_000, 1, smallest):
            kernel = cls(workspace_cap=cap)
            reason = kernel.supports(p)
            if reason is not None:
                assert cap < smallest and reason.startswith(WORKSPACE_REFUSAL), reason
                assert f"needs {smallest} bytes" in reason and f"cap of {cap} bytes" in reason
                with pytest.raises(UnsupportedProblem, match="^workspace: needs "):
                    kernel.prepare(p, x, w, b)
                continue
            y = kernel.prepare(p, x, w, b)()
            assert envelope_ratio(kernel, p, x, w, b, y) <= 1, (cls.__name__, cap)
            assert kernel.workspace_bytes(p) <= cap


def _smallest_tile(kernel, p):
    """Workspace of the smallest tile a kernel can use (one row band of one image)."""
    return type(kernel)(workspace_cap=1).workspace_bytes(p)


@pytest.mark.parametrize("algo", CPU_KERNELS)
def test_vgg16_conv1_2_batch32_workspace_is_capped(algo):
    """VGG-16 conv1_2 at batch 32: the workspace stays under the documented cap.

    Inputs and output are 2 x 411 MB in float32; the kernels add at most 256 MiB,
    so the layer fits a 24 GiB machine. (Running it is a benchmark: see
    benchmarks/test_memory.py.)
    """
    from convbench.kernels.cpu.base import WORKSPACE_CAP_BYTES

    p = ConvProblem.parse('mb32ic64ih224oc64kh3ph1n"conv1_2"')
    kernel = convbench.get_kernel(algo)
    assert kernel.supports(p) is None
    assert kernel.workspace_bytes(p) <= WORKSPACE_CAP_BYTES


def test_fft_whole_image_path_only_where_the_padding_wraps_onto_zeros():
    """No-gather FFT: used when one tile covers the image and L >= H + pad, exact both ways."""
    from convbench.kernels.algorithms.fft import FftPlan, whole_image_path
    from convbench.kernels.cpu.fft import FftKernel

    p = ConvProblem.make(2, 3, 9, 9, 4, 3, 3, stride=2, padding=((1, 0), (1, 0)), bias=True)
    one_tile = FftPlan(lh=10, lw=10, th=p.oh, tw=p.ow, tile_rows=1, tile_cols=1, batch=2)
    assert whole_image_path(p, one_tile)
    # L = 9 holds every window (3*2 + 3) but the wrapped padding row 8 is image data.
    assert not whole_image_path(p, FftPlan(9, 9, p.oh, p.ow, 1, 1, 2))
    assert not whole_image_path(p, FftPlan(10, 10, 2, p.ow, 2, 1, 2))  # two tile rows

    x, w, b = random_inputs(p)
    for plan in (one_tile, FftPlan(9, 9, p.oh, p.ow, 1, 1, 1)):  # no-gather / gather
        kernel = FftKernel()
        kernel.plan = lambda _p, plan=plan: plan
        y = kernel.prepare(p, x, w, b)()
        assert envelope_ratio(kernel, p, x, w, b, y) <= 1, plan


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_winograd_filter_transform_is_g_g_gt_rounded_once(dtype):
    """U = G g G^T per (k, c), from the definition in float64, any G.

    Weights span 2^-40..2^40 so that sums of their scaled terms are not all
    exact. float32: within one rounding of the float64 result. float64: within
    the error bound of a 9-term float64 sum (the order of the terms may differ).
    """
    from convbench.kernels.algorithms import winograd as algorithm
    from convbench.kernels.algorithms.winograd import G
    from convbench.kernels.cpu.winograd import filter_transform

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((12, 5, 3, 3)) * 2.0 ** rng.integers(-40, 40, (12, 5, 3, 3)))
    w = w.astype(dtype)
    other_g = G + rng.uniform(-0.1, 0.1, G.shape)  # as the fault-injection tests use
    # The CPU kernel's Numba loop nest and the GPU kernels' einsum (here on NumPy).
    for transform in (filter_transform, algorithm.filter_transform):
        for g_matrix in (G, other_g):
            exact = np.einsum("ir,kcrs,js->ijkc", g_matrix, w.astype(np.float64), g_matrix)
            scale = np.einsum("ir,kcrs,js->ijkc", abs(g_matrix), abs(w.astype(np.float64)),
                              abs(g_matrix))
            got = transform(w, 3, g_matrix)
            assert got.dtype == w.dtype and got.shape == (16, 3, 4, 5)
            err = abs(got.reshape(4, 4, 12, 5) - exact)
            bound = np.finfo(dtype).eps * abs(exact) + 16 * np.finfo(np.float64).eps * scale
            assert (err <= bound).all(), float((err / bound).max())
        with pytest.raises(ValueError, match="G must be 4x3"):
            transform(w, 3, G[:3])
