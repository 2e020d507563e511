"""The GPU kernels, CUDA sources included, run on the CPU through the host emulator.

CI has no GPU. These tests run each GPU kernel's complete host pipeline
(tiling, layouts, GEMM shapes, FFT plans) with NumPy standing in for CuPy and
the very CUDA C of ``kernels/gpu/cuda`` compiled for the host, and hold it to
the CPU tolerances. The CUDA transform kernels are also compared bit for bit
with the CPU kernels' Numba functions they mirror.
"""

import dataclasses

import numpy as np
import pytest
from conftest import FP16_TARGET, documented_refusal, envelope_ratio, random_inputs, rel_l2
from problem_grid import GRID

from convbench import ConvProblem, UnsupportedProblem
from convbench.kernels.algorithms import fft as fft_algorithm
from convbench.kernels.algorithms import winograd as winograd_algorithm
from convbench.kernels.catalog import builtin_kernels
from convbench.kernels.cpu import fft as cpu_fft
from convbench.kernels.cpu import im2col as cpu_im2col
from convbench.kernels.cpu import winograd as cpu_winograd
from convbench.kernels.gpu import direct as gpu_direct
from convbench.kernels.gpu import fft as gpu_fft
from convbench.kernels.gpu import im2col as gpu_im2col
from convbench.kernels.gpu import sources
from convbench.kernels.gpu import winograd as gpu_winograd
from convbench.kernels.gpu.runtime import HostRuntime, Int64, elementwise_grid, row_grid
from convbench.measure.inputs import exact_inputs
from convbench.problem.reference import reference_for

RUNTIME = HostRuntime()
#: Every GPU kernel convbench ships, by name: a new one is emulated without editing this file.
CLASSES = {k.name: type(k) for k in builtin_kernels() if k.backend == "gpu" and k.kind == "kernel"}

pytestmark = pytest.mark.skipif(RUNTIME.unavailable_reason() is not None,
                                reason=str(RUNTIME.unavailable_reason()))


def emulated(algo, **kw):
    return CLASSES[algo](RUNTIME, **kw)


def fp16_inputs(p, seed=0):
    """Inputs rounded to float16 (the reference sees the rounded values)."""
    return [None if a is None else a.astype(np.float16) for a in random_inputs(
        p.with_(dtype="float32"), seed)]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("algo", sorted(CLASSES))
@pytest.mark.parametrize("shape, kwargs", GRID)
def test_emulated_gpu_kernel_matches_reference(shape, kwargs, algo, dtype):
    p = ConvProblem.make(*shape, dtype=dtype, **kwargs)
    kernel = emulated(algo)
    reason = documented_refusal(kernel, p)
    if reason is not None:
        # direct, im2col and FFT run every problem; Winograd says why it cannot; a kernel
        # added later may decline what it does not handle, for a reason it documents.
        assert algo not in ("direct", "im2col", "fft"), reason
        assert algo != "winograd" or "winograd F(2x2,3x3) needs" in reason, reason
        return
    x, w, b = fp16_inputs(p) if dtype == "float16" else random_inputs(p)
    y = kernel.prepare(p, x, w, b)()
    assert y.shape == p.output_shape and y.dtype == np.dtype(dtype)
    ratio = envelope_ratio(kernel, p, x, w, b, y)
    assert ratio <= 1, f"{algo} {dtype} {p}: {ratio:.3g} of its error envelope"
    if dtype == "float16":
        assert rel_l2(y, reference_for(p, x, w, b)) <= FP16_TARGET


# A cap small enough to force image and row tiling on a 2-image problem.
TILING = [
    ("im2col", "mb3ic5ih11iw9oc7kh3ph1", 2000),
    ("im2col", "mb2ic3ih9oc4kh3sh2ph1", 300),
    ("winograd", "mb3ic5ih11iw9oc7kh3ph1", 6000),
    ("fft", "mb3ic5ih17iw9oc7kh5ph2", 30000),
]


@pytest.mark.parametrize("algo, desc, cap", TILING)
def test_tiled_runs_match_untiled(algo, desc, cap):
    p = ConvProblem.parse(desc).with_(bias=True)
    x, w, b = random_inputs(p)
    whole = emulated(algo).prepare(p, x, w, b)()
    kernel = emulated(algo, workspace_cap=cap)
    if algo == "fft":
        assert kernel.plan(p).batch < p.mb * kernel.plan(p).tiles, "cap did not tile"
    else:
        whole_rows = p.oh if algo == "im2col" else -(-p.oh // 2)
        assert kernel.plan(p)[:2] != (p.mb, whole_rows), "cap did not tile"
    tiled = kernel.prepare(p, x, w, b)()
    assert envelope_ratio(kernel, p, x, w, b, tiled) <= 1
    # Different GEMM widths may round differently in the BLAS, nothing more.
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


@pytest.mark.parametrize("algo", ["direct", "im2col"])
@pytest.mark.parametrize("desc", ["mb2ic16ih9oc8kh3ph1", "g4mb1ic8ih7oc8kh5sh2ph2",
                                  "mb1ic3ih19oc4kh11sh4"])
def test_exact_fill_is_bit_exact(algo, desc):
    """Integer data the dtype holds exactly: any summation order gives the reference."""
    p = ConvProblem.parse(desc).with_(bias=True)
    x, w, b = exact_inputs(p)
    y = emulated(algo).prepare(p, x, w, b)()
    np.testing.assert_array_equal(y, reference_for(p, x, w, b).astype(np.float32))


# ------------------------------------------------ CUDA vs the CPU's Numba functions
def test_cuda_im2col_lowering_equals_cpu_lowering():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 9, 11)).astype(np.float32)
    kh, kw, sh, sw, pt, pl, dh, dw = 3, 2, 2, 1, 1, 0, 1, 2
    q = (11 - ((kw - 1) * dw + 1)) // sw + 1
    n0, p0, rows, nb = 1, 1, 3, 2
    expected = np.full((nb, 4 * kh * kw, rows * q), 7, np.float32)
    cpu_im2col.im2col_lower(x, expected, n0, p0, rows, kh, kw, sh, sw, pt, pl, dh, dw, q)
    got = np.full_like(expected, 7)
    RUNTIME.launch(gpu_im2col.SOURCE, "im2col_lower_f32", *row_grid(nb * 4 * kh * kw, rows * q),
                   [x, got, nb, 4, 9, 11, n0, p0, rows, kh, kw, sh, sw, pt, pl, dh, dw, q])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_winograd_transforms_equal_cpu_transforms(dtype):
    rng = np.random.default_rng(2)
    n, c, k, h, w_, pt, pl = 3, 5, 4, 9, 8, 1, 0
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    p_out, q_out = h + 2 * pt - 2, w_ + 2 * pl - 2
    n0, nb, tr0, rows, cols = 1, 2, 1, 2, -(-q_out // 2)
    tiles = nb * rows * cols
    v_cpu = np.zeros((16, c, tiles), dtype)
    cpu_winograd.input_transform(x, v_cpu, n0, nb, tr0, rows, cols, pt, pl)
    v_gpu = np.zeros_like(v_cpu)
    RUNTIME.launch(gpu_winograd.SOURCE, sources.kernel_name("winograd_input", dtype),
                   *elementwise_grid(c * tiles),
                   [x, v_gpu, c, h, w_, n0, nb, tr0, rows, cols, pt, pl])
    np.testing.assert_array_equal(v_gpu, v_cpu)

    m = rng.standard_normal((16, k, tiles)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    y_cpu = np.full((n, k, p_out, q_out), 9, dtype)
    cpu_winograd.output_transform(m, bias, y_cpu, n0, nb, tr0, rows, cols)
    y_gpu = np.full_like(y_cpu, 9)
    RUNTIME.launch(gpu_winograd.SOURCE, sources.kernel_name("winograd_output", dtype),
                   *elementwise_grid(k * tiles),
                   [m, bias, y_gpu, k, p_out, q_out, n0, nb, tr0, rows, cols, 1])
    np.testing.assert_array_equal(y_gpu, y_cpu)


def _input_tiles(x, n0, nb, tr0, rows, cols, pt, pl):
    """The 4x4 input tiles d of Winograd's tile layout, (C, T, 4, 4), zero off the image."""
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * (pt + 4), w + 2 * (pl + 4)), x.dtype)
    padded[:, :, pt + 4:pt + 4 + h, pl + 4:pl + 4 + w] = x
    tiles = [padded[n0 + b, :, 4 + (tr0 + i) * 2:8 + (tr0 + i) * 2, 4 + j * 2:8 + j * 2]
             for b in range(nb) for i in range(rows) for j in range(cols)]
    return np.stack(tiles, axis=1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_both_winograd_transforms_compute_the_papers_definitions(dtype):
    """Numba's and CUDA's V = B^T d B and Y = A^T m A equal the matrices' products.

    Each value is a sum of at most 4 (V) or 9 (Y) terms: the kernels' additions
    differ from the float64 definition by a few roundings at most.
    """
    rng = np.random.default_rng(5)
    n, c, k, h, w_, pt, pl = 2, 3, 2, 7, 9, 1, 1
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    p_out, q_out = h + 2 * pt - 2, w_ + 2 * pl - 2
    rows, cols = -(-p_out // 2), -(-q_out // 2)
    tiles = n * rows * cols
    d = _input_tiles(x.astype(np.float64), 0, n, 0, rows, cols, pt, pl)
    expected_v = winograd_algorithm.input_transform(d).reshape(c, tiles, 16).transpose(2, 0, 1)
    eps = np.finfo(dtype).eps
    v_cpu = np.zeros((16, c, tiles), dtype)
    cpu_winograd.input_transform(x, v_cpu, 0, n, 0, rows, cols, pt, pl)
    v_gpu = np.zeros_like(v_cpu)
    RUNTIME.launch(gpu_winograd.SOURCE, sources.kernel_name("winograd_input", dtype),
                   *elementwise_grid(c * tiles),
                   [x, v_gpu, c, h, w_, 0, n, 0, rows, cols, pt, pl])
    for got in (v_cpu, v_gpu):
        np.testing.assert_allclose(got, expected_v, rtol=0, atol=4 * eps * np.abs(d).max())

    m = rng.standard_normal((16, k, tiles)).astype(dtype)
    per_tile = winograd_algorithm.output_transform(
        m.astype(np.float64).transpose(1, 2, 0).reshape(k, tiles, 4, 4))
    expected_y = np.zeros((n, k, 2 * rows, 2 * cols))
    for t in range(tiles):
        b, i, j = t // (rows * cols), (t // cols) % rows, t % cols
        expected_y[b, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = per_tile[:, t]
    expected_y = expected_y[:, :, :p_out, :q_out]
    y_cpu = np.zeros((n, k, p_out, q_out), dtype)
    cpu_winograd.output_transform(m, np.zeros(k, dtype), y_cpu, 0, n, 0, rows, cols)
    y_gpu = np.zeros_like(y_cpu)
    RUNTIME.launch(gpu_winograd.SOURCE, sources.kernel_name("winograd_output", dtype),
                   *elementwise_grid(k * tiles),
                   [m, np.zeros(k, dtype), y_gpu, k, p_out, q_out, 0, n, 0, rows, cols, 0])
    for got in (y_cpu, y_gpu):
        np.testing.assert_allclose(got, expected_y, rtol=0, atol=16 * eps * np.abs(m).max())


def test_cuda_fft_gather_and_scatter_equal_cpu():
    p = ConvProblem.parse("mb2ic3ih64iw61oc4kh3kw5sh2sw1ph1pw2")
    plan = fft_algorithm.plan_fft(p, 10**6)
    assert plan.tile_rows > 1 and plan.tile_cols > 1 and plan.batch > 1, plan
    rng = np.random.default_rng(3)
    x = rng.standard_normal(p.input_shape).astype(np.float32)
    t0, nb = 5, plan.batch - 5  # a batch starting inside an image, crossing into the next
    step_h, step_w = plan.th * p.sh, plan.tw * p.sw
    cpu_tiles = np.zeros((nb, p.ic, plan.lh, plan.lw), np.float32)
    cpu_fft.gather_tiles(x, cpu_tiles, t0, plan.tile_rows, plan.tile_cols, step_h, step_w,
                         p.ph, p.pw)
    gpu_tiles = np.zeros_like(cpu_tiles)
    RUNTIME.launch(gpu_fft.SOURCE, "fft_gather_tiles_f32", *row_grid(nb * p.ic, plan.lh * plan.lw),
                   [x, gpu_tiles, nb, p.ic, p.ih, p.iw, Int64(t0), plan.tile_rows,
                    plan.tile_cols, plan.lh, plan.lw, step_h, step_w, p.ph, p.pw])
    np.testing.assert_array_equal(gpu_tiles, cpu_tiles)

    out = rng.standard_normal((nb, p.oc, plan.lh, plan.lw)).astype(np.float32)
    bias = rng.standard_normal(p.oc).astype(np.float32)
    y_cpu = np.full(p.output_shape, 5, np.float32)
    cpu_fft.scatter_outputs(out, bias, y_cpu, t0, plan.tile_rows, plan.tile_cols, plan.th,
                            plan.tw, p.sh, p.sw)
    y_gpu = np.full_like(y_cpu, 5)
    RUNTIME.launch(gpu_fft.SOURCE, "fft_scatter_outputs_f32",
                   *row_grid(nb * p.oc, plan.th * plan.tw),
                   [out, bias, y_gpu, nb, p.oc, p.oh, p.ow, Int64(t0), plan.tile_rows,
                    plan.tile_cols, plan.lh, plan.lw, plan.th, plan.tw, p.sh, p.sw, 1])
    np.testing.assert_array_equal(y_gpu, y_cpu)


def test_float16_outputs_round_to_nearest_even():
    """float32 sums stored as float16 by the CUDA source: round to nearest even, as NumPy."""
    a = np.array([1, 1, 1, 2048, 65504, -65504, 0.5, 1e-4], np.float16)
    b = np.array([2**-11, 3 * 2**-11, 2**-12, 1, 16, -8, 2**-13, 1e-4], np.float16)
    p = ConvProblem.parse(f"mb1ic2ih1iw{a.size}oc1kh1").with_(dtype="float16")
    x = np.stack([a, b]).reshape(p.input_shape)
    w = np.ones(p.weight_shape, np.float16)
    with np.errstate(over="ignore"):  # 65504 + 16 is a tie that rounds to inf
        expected = (a.astype(np.float32) + b.astype(np.float32)).astype(np.float16)
    for algo in ("direct", "im2col"):
        with np.errstate(over="ignore"):
            got = emulated(algo).prepare(p, x, w, None)().ravel()
        np.testing.assert_array_equal(got, expected, err_msg=algo)
    assert np.isinf(expected[4]) and expected[0] == 1 and expected[1] == 1 + 2**-9


def test_emulator_refuses_barrier_in_a_barrier_free_launch(monkeypatch):
    unsynchronized = dataclasses.replace(gpu_direct.SOURCE, synchronizing=frozenset())
    monkeypatch.setattr(gpu_direct, "SOURCE", unsynchronized)
    p = ConvProblem.parse("mb1ic2ih5oc2kh3")
    x, w, _ = random_inputs(p)
    with pytest.raises(RuntimeError, match="__syncthreads"):
        emulated("direct").prepare(p, x, w, None)()


def test_unsupported_problem_raises_with_reason():
    p = ConvProblem.parse("mb1ic2ih9oc2kh5")
    with pytest.raises(UnsupportedProblem, match="needs a 3x3 filter"):
        emulated("winograd").prepare(p, *random_inputs(p))


@pytest.fixture
def emulated_kernels():
    from convbench.registry import register, unregister

    names = []
    for algo in CLASSES:
        kernel = emulated(algo)
        kernel.name = f"{algo}_emulated"
        register(kernel)
        names.append(kernel.name)
    yield names
    for name in names:
        unregister(name, "gpu")


@pytest.mark.slow
def test_gpu_sweep_records_on_the_emulator(emulated_kernels, tmp_path):
    """The runner's GPU path end to end: device clock, L2-flush flag, math mode, errors."""
    from convbench.measure.runner import SweepSettings, plan_tasks, run_sweep
    from convbench.problem.suites import SuiteLayer

    layers = [SuiteLayer(ConvProblem.parse(d).with_(dtype=dt)) for d in
              ("mb2ic8ih10oc8kh3ph1", "mb1ic6ih9oc4kh1") for dt in ("float32", "float16")]
    settings = SweepSettings(backend="gpu", mode="both", min_reps=2, min_time=0.0,
                             isolate=False, flush_l2=True)
    tasks = plan_tasks([("t", layer) for layer in layers], emulated_kernels, settings)
    records = run_sweep(tasks, settings, None).records
    assert len(records) == len(layers) * len(emulated_kernels)
    for rec in records:
        if rec["kernel"].startswith("winograd") and "kh1" in rec["problem"]:
            assert rec["status"] == "skipped" and "3x3" in rec["reason"]
            continue
        assert rec["status"] == "ok", rec.get("reason")
        assert rec["time"]["clock"] == "host" and rec["time"]["flush_l2"]
        assert rec["time"]["reps"] >= 2 and rec["gflops"] > 0
        assert rec["math_mode"].startswith("fp16 storage" if rec["dtype"] == "float16" else "fp32")
        tol = 2e-3 if rec["dtype"] == "float16" else 5e-5
        assert rec["error"]["rel_l2"] <= tol, rec


# ------------------------------------------------------------- math modes
MATH_PROBLEMS = ["mb2ic16ih10oc24kh3ph1", "mb2ic24ih9oc16kh1", "g2mb1ic8ih11oc12kh3sh2ph1",
                 "mb2ic12ih8oc40kh1sh2"]


def math_problem(desc, math):
    dtype, fpmath = {"fp32": ("float32", "strict"), "tf32": ("float32", "tf32"),
                     "fp16": ("float16", "strict"), "fp64": ("float64", "strict")}[math]
    return ConvProblem.parse(desc).with_(dtype=dtype, fpmath=fpmath, bias=True)


def math_inputs(p):
    return fp16_inputs(p) if p.dtype == "float16" else random_inputs(p)


@pytest.mark.parametrize("math", ["fp32", "tf32", "fp16", "fp64"])
@pytest.mark.parametrize("algo", sorted(CLASSES))
@pytest.mark.parametrize("desc", MATH_PROBLEMS)
def test_every_kernel_runs_its_whole_pipeline_in_every_math_mode(desc, algo, math):
    p = math_problem(desc, math)
    kernel = emulated(algo)
    if documented_refusal(kernel, p) is not None:
        return
    x, w, b = math_inputs(p)
    call = kernel.prepare(p, x, w, b)
    y = call()
    assert y.dtype == np.dtype(p.dtype) and y.shape == p.output_shape
    ratio = envelope_ratio(kernel, p, x, w, b, y)
    assert ratio <= 1, f"{algo} {math} {p}: {ratio:.3g} of its error envelope"
    if math in ("tf32", "fp16"):
        assert rel_l2(y, reference_for(p, x, w, b)) <= FP16_TARGET
    precision = call.details["precision"]
    assert precision["storage"] == p.dtype and len(precision) >= 2


@pytest.mark.parametrize("algo", ["im2col", "winograd", "fft"])
def test_tf32_mode_rounds_gemm_operands_and_strict_fp32_does_not(algo):
    """The emulated TF32 GEMMs lose bits that strict float32 keeps: the modes differ."""
    strict = math_problem("mb2ic32ih10oc16kh3ph1", "fp32")
    x, w, b = random_inputs(strict)
    ref = reference_for(strict, x, w, b)
    err = {}
    for p in (strict, strict.with_(fpmath="tf32")):
        kernel = emulated(algo)
        y = kernel.prepare(p, x, w, b)()
        err[p.fpmath] = rel_l2(y, ref)
        assert envelope_ratio(kernel, p, x, w, b, y) <= 1, p.fpmath
    # Strict fp32 would not be within TF32's envelope by chance: TF32 loses 13 bits.
    assert err["tf32"] > 10 * err["strict"] and err["tf32"] < FP16_TARGET, err


def test_direct_computes_tf32_problems_strictly():
    p = math_problem("mb2ic32ih10oc16kh3ph1", "tf32")
    x, w, b = random_inputs(p)
    kernel = emulated("direct")
    assert not kernel.uses_tf32
    y_tf32 = kernel.prepare(p, x, w, b)()
    y_strict = kernel.prepare(p.with_(fpmath="strict"), x, w, b)()
    np.testing.assert_array_equal(y_tf32, y_strict)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_fft_with_one_input_channel(dtype):
    """N=2, C=1, 11x11, K=5, 1x1 filter, stride 2: cuFFT was handed F-contiguous arrays."""
    p = ConvProblem.make(2, 1, 11, 11, 5, 1, 1, stride=2, padding=((3, 3), (1, 1)), dilation=2,
                         dtype=dtype, bias=True)
    x, w, b = fp16_inputs(p) if dtype == "float16" else random_inputs(p)
    kernel = emulated("fft")
    assert min(kernel.plan(p).lh, kernel.plan(p).lw) >= gpu_fft.MIN_FFT_LENGTH
    y = kernel.prepare(p, x, w, b)()
    assert envelope_ratio(kernel, p, x, w, b, y) <= 1


def test_emulated_fft_refuses_what_cufft_would_misread():
    tiles = np.zeros((3, 8, 6), np.float32)
    spectra = np.zeros((8 * 4, 3), np.complex64)
    RUNTIME.rfft2_by_frequency(tiles, spectra)
    with pytest.raises(ValueError, match="C-contiguous"):
        RUNTIME.rfft2_by_frequency(np.zeros((3, 6, 8), np.float32).transpose(0, 2, 1), spectra)
    with pytest.raises(ValueError, match="C-contiguous"):
        RUNTIME.irfft2_by_frequency(np.zeros((3, 8 * 4), np.complex64).T, tiles)
    with pytest.raises(ValueError, match="spectra of"):
        RUNTIME.rfft2_by_frequency(tiles, np.zeros((3, 8 * 4), np.complex64))
    RUNTIME.irfft2_by_frequency(spectra, tiles)
    assert np.isnan(spectra).all()  # like cuFFT's C2R, the input is spent


def test_emulated_fft_layout_is_frequency_major_and_unnormalized():
    rng = np.random.default_rng(4)
    tiles = rng.standard_normal((5, 6, 10))
    spectra = np.empty((6 * 6, 5), np.complex128)
    RUNTIME.rfft2_by_frequency(tiles, spectra)
    expected = np.fft.rfft2(tiles).reshape(5, -1)
    np.testing.assert_allclose(spectra, expected.T, atol=1e-12)
    back = np.empty_like(tiles)
    RUNTIME.irfft2_by_frequency(spectra, back)
    np.testing.assert_allclose(back, tiles * 60, atol=1e-10)  # no 1/(L_h L_w)
