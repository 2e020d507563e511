"""The GPU backward passes on the host emulator, and the GPU baselines' backward set-up.

CI has no GPU: each GPU kernel's backward pipeline runs whole on the host
emulator (its CUDA C compiled for the host, NumPy standing in for CuPy and
cuBLAS/cuFFT) and is held to torch's float64 autograd in float32, float64
and float16. The cuDNN frontend baseline's dgrad/wgrad graphs are checked
against a recording stand-in for the frontend, and the torch-cuDNN
baseline's ``convolution_backward`` calls run on torch's CPU build.
"""

import dataclasses
import types

import numpy as np
import pytest
from backward_reference import DIRECTIONS, check_problem, torch_gradients
from conftest import documented_refusal

from convbench import ConvProblem, UnsupportedProblem
from convbench.kernels.baselines import cudnn as cudnn_baseline
from convbench.kernels.baselines import torch_cudnn
from convbench.kernels.baselines.onednn import torch_padding
from convbench.kernels.catalog import builtin_kernels
from convbench.kernels.cpu import winograd_backward as cpu_wb
from convbench.kernels.gpu import backward as gpu_backward
from convbench.kernels.gpu import sources
from convbench.kernels.gpu import winograd as gpu_winograd
from convbench.kernels.gpu.runtime import HostRuntime, elementwise_grid

RUNTIME = HostRuntime()
CLASSES = {k.name: type(k) for k in builtin_kernels() if k.backend == "gpu" and k.kind == "kernel"}
needs_emulator = pytest.mark.skipif(RUNTIME.unavailable_reason() is not None,
                                    reason=str(RUNTIME.unavailable_reason()))

PROBLEMS = [
    ConvProblem.make(2, 4, 9, 11, 6, 3, 3, padding=1),
    ConvProblem.make(3, 6, 10, 7, 4, 3, 3, padding=((2, 0), (1, 2)), groups=2),
    ConvProblem.make(1, 4, 8, 8, 4, 3, 3, padding=3, groups=4),  # depthwise, dy cropped
    ConvProblem.make(3, 6, 10, 7, 4, 3, 2, stride=(2, 3), padding=((1, 0), (2, 1)),
                     dilation=(1, 2), groups=2),
    ConvProblem.make(1, 3, 13, 12, 5, 5, 5, stride=3, padding=((0, 3), (3, 0)), dilation=2),
    ConvProblem.parse("mb2ic5ih9iw8oc3oh4ow7kh3sh2ph0pw1"),  # negative trailing padding
]


@needs_emulator
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("algo", ["direct", "im2col", "fft", "winograd"])
def test_emulated_backward_matches_torch(algo, dtype):
    kernel = CLASSES[algo](RUNTIME)
    ran = 0
    for i, base in enumerate(PROBLEMS):
        base = base.with_(dtype=dtype)
        reasons = [documented_refusal(kernel, dataclasses.replace(base, dir=d, bias=True))
                   for d in DIRECTIONS]
        if algo == "winograd" and any(reasons):
            assert all(reasons), reasons
            continue
        assert reasons == [None] * 3, reasons
        check_problem(kernel, base, seed=i)
        ran += 1
    assert ran >= (3 if algo == "winograd" else len(PROBLEMS))


@needs_emulator
@pytest.mark.parametrize("algo", ["im2col", "fft", "winograd"])
def test_emulated_backward_tiles_under_a_small_cap(algo):
    base = ConvProblem.make(5, 6, 17, 15, 8, 3, 3, padding=1, dtype="float64")
    check_problem(CLASSES[algo](RUNTIME, workspace_cap=30_000), base)


@needs_emulator
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_weight_transforms_equal_the_cpu_kernels(dtype):
    """F(3x3,2x2)'s CUDA U = G' dy G'^T and the forward's CUDA V, bit for bit the Numba ones."""
    rng = np.random.default_rng(8)
    n, c, k, h, w_, pt, pl = 3, 4, 5, 9, 8, 1, 2
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    p_out, q_out = h + 2 * pt - 2, w_ + 2 * pl - 2
    dy = rng.standard_normal((n, k, p_out, q_out)).astype(dtype)
    n0, nb, tr0, rows, cols = 1, 2, 1, 3, -(-q_out // 2)
    tiles = nb * rows * cols
    u_cpu = np.zeros((16, k, tiles), dtype)
    cpu_wb.gradient_tiles(dy, u_cpu, n0, nb, tr0, rows, cols)
    u_gpu = np.zeros_like(u_cpu)
    RUNTIME.launch(gpu_backward.SOURCE, sources.kernel_name("winograd_grad_tiles", dtype),
                   *elementwise_grid(k * tiles), [dy, u_gpu, k, p_out, q_out, n0, nb, tr0, rows,
                                                  cols])
    np.testing.assert_array_equal(u_gpu, u_cpu)
    v_cpu = np.zeros((16, c, tiles), dtype)
    cpu_wb.input_tiles(x, v_cpu, n0, nb, tr0, rows, cols, pt, pl)
    v_gpu = np.zeros_like(v_cpu)
    RUNTIME.launch(gpu_winograd.SOURCE, sources.kernel_name("winograd_input", dtype),
                   *elementwise_grid(c * tiles), [x, v_gpu, c, h, w_, n0, nb, tr0, rows, cols,
                                                  pt, pl])
    np.testing.assert_array_equal(v_gpu, v_cpu)


@needs_emulator
def test_emulated_winograd_refuses_with_the_reason():
    p = dataclasses.replace(ConvProblem.make(1, 2, 9, 9, 2, 3, 3, stride=2), dir="bwd_d")
    with pytest.raises(UnsupportedProblem, match=r"winograd bwd_d .* needs stride 1"):
        CLASSES["winograd"](RUNTIME).prepare(p, np.zeros(p.output_shape, np.float32),
                                             np.zeros(p.weight_shape, np.float32), None)


def test_registered_gpu_kernels_skip_backward_with_a_reason_without_a_gpu():
    from convbench.kernels.gpu.runtime import cupy_unavailable_reason

    reason = cupy_unavailable_reason()
    if reason is None:
        pytest.skip("a GPU is present")
    p = dataclasses.replace(ConvProblem.make(1, 2, 9, 9, 2, 3, 3, padding=1), dir="bwd_w")
    gpu = [k for k in builtin_kernels() if k.backend == "gpu"]
    # The four algorithms compute bwd_w (the larger Winograd tiles only the forward) ...
    assert {k.name for k in gpu if "bwd_w" in k.directions} >= {"direct", "im2col", "fft",
                                                                 "winograd"}
    # ... and every GPU kernel refuses it here with a reason.
    for kernel in gpu:
        assert kernel.supports(p), kernel.name


# ------------------------------------------------------------------- baselines
class _Tensor:
    def __init__(self, **attrs):
        self.attrs = attrs

    def __getattr__(self, name):
        if name.startswith("set_"):
            def setter(value=True, key=name[4:]):
                self.attrs[key] = value
                return self
            return setter
        raise AttributeError(name)


class _Graph:
    def __init__(self, **kw):
        self.calls = []

    def tensor(self, **kw):
        return _Tensor(**kw)

    def _op(self, name):
        def op(**kw):
            self.calls.append((name, kw))
            return _Tensor()
        return op

    def __getattr__(self, name):
        if name.startswith("conv_"):
            return self._op(name)
        if name in ("validate", "build_operation_graph", "create_execution_plans"):
            return lambda *a, **k: None
        raise AttributeError(name)


FAKE_CUDNN = types.SimpleNamespace(
    data_type=types.SimpleNamespace(FLOAT="f", HALF="h", DOUBLE="d"),
    heur_mode=types.SimpleNamespace(A="A", FALLBACK="F"), pygraph=_Graph)


@pytest.mark.parametrize("direction, operation, operands, result_dim", [
    ("bwd_d", "conv_dgrad", {"loss": [2, 6, 4, 6], "filter": [6, 2, 3, 3]}, [2, 4, 9, 11]),
    ("bwd_w", "conv_wgrad", {"image": [2, 4, 9, 11], "loss": [2, 6, 4, 6]}, [6, 2, 3, 3]),
    ("bwd_wb", "conv_wgrad", {"image": [2, 4, 9, 11], "loss": [2, 6, 4, 6]}, [6, 2, 3, 3]),
])
def test_cudnn_frontend_builds_the_graph_of_each_direction(monkeypatch, direction, operation,
                                                           operands, result_dim):
    monkeypatch.setattr(cudnn_baseline, "shared_handle", lambda: None)
    # 9 rows, stride 2, top padding 1: no bottom padding (the stride never reads past row 8).
    base = ConvProblem.make(2, 4, 9, 11, 6, 3, 3, stride=2, padding=((1, 0), (1, 1)), groups=2)
    p = dataclasses.replace(base, dir=direction, bias=direction == "bwd_wb")
    graph, tensors, result = cudnn_baseline.CudnnFrontendBaseline("heuristic")._graph(
        FAKE_CUDNN, p)
    assert cudnn_baseline.OPERATIONS[direction] == operation
    (name, kw), = graph.calls
    assert name == operation
    assert {key: kw[key].attrs["dim"] for key in operands} == operands
    assert kw["pre_padding"] == [1, 1] and kw["post_padding"] == [0, 1]
    assert kw["stride"] == [2, 2] and kw["dilation"] == [1, 1]
    assert result.attrs["dim"] == result_dim and result.attrs["output"] is True
    if direction == "bwd_d":  # dx keeps the strides of the whole input
        assert result.attrs["stride"] == [4 * 9 * 11, 9 * 11, 11, 1]


@pytest.mark.parametrize("p", [
    ConvProblem.make(2, 4, 9, 11, 6, 3, 3, stride=2, padding=1, groups=2),
    ConvProblem.make(2, 4, 9, 8, 6, 3, 2, padding=((2, 0), (0, 1)), dilation=(2, 1)),
], ids=str)
def test_torch_cudnn_backward_calls_compute_the_gradients(p):
    """The same aten calls, on torch's CPU build: each direction's gradient."""
    torch = pytest.importorskip("torch")
    rt = types.SimpleNamespace(xp=np)
    rng = np.random.default_rng(9)
    x, w, dy = (rng.standard_normal(s) for s in (p.input_shape, p.weight_shape, p.output_shape))
    dx_ref, dw_ref, db_ref = torch_gradients(p, x, w, dy)
    padding, pre_pad = torch_padding(p)
    t = torch.from_numpy
    dx = torch_cudnn.backward_call(torch, rt, dataclasses.replace(p, dir="bwd_d"), t(dy), t(w),
                                   padding, pre_pad)()
    dw = torch_cudnn.backward_call(torch, rt, dataclasses.replace(p, dir="bwd_w"), t(x), t(dy),
                                   padding, pre_pad)()
    dw2, db = torch_cudnn.backward_call(torch, rt, dataclasses.replace(p, dir="bwd_wb", bias=True),
                                        t(x), t(dy), padding, pre_pad)()
    for got, ref in ((dx, dx_ref), (dw, dw_ref), (dw2, dw_ref), (db, db_ref)):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_gpu_baselines_declare_every_direction():
    assert torch_cudnn.TorchCudnnBaseline.directions == ("fwd", *DIRECTIONS)
    for kernel in cudnn_baseline.KERNELS:
        assert kernel.directions == ("fwd", *DIRECTIONS)


@needs_emulator
@pytest.mark.parametrize("algo", ["direct", "im2col", "fft", "winograd"])
def test_emulated_zero_batch_gives_zero_weight_gradients(algo):
    base = ConvProblem.make(0, 4, 7, 9, 6, 3, 3, padding=1)
    p = dataclasses.replace(base, dir="bwd_wb", bias=True)
    dw, db = CLASSES[algo](RUNTIME).prepare(p, np.zeros(base.input_shape, np.float32),
                                            np.zeros(base.output_shape, np.float32), None)()
    assert dw.shape == base.weight_shape and not dw.any() and not db.any()
