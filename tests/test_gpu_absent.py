"""Without a GPU (and here without CuPy): GPU code imports, lists, skips with reasons."""

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import make_task

import convbench
from convbench import ConvProblem, KernelBase, Prepared, UnsupportedProblem
from convbench.kernels.baselines.cudnn import (
    CudnnPlan,
    choose_plan,
    inadmissible_reason,
)
from convbench.kernels.gpu import runtime
from convbench.measure.runner import OUT_OF_GPU_MEMORY, is_device_oom, measure
from convbench.measure.timing import bench
from convbench.registry import register, unregister

GPU_NAMES = ["direct", "im2col", "fft", "winograd", "winograd_4x4", "winograd_6x6", "cudnn",
             "cudnn_best", "torch_cudnn"]
SMALL = "mb1ic4ih9oc4kh3ph1"
no_gpu = pytest.mark.skipif(runtime.cupy_unavailable_reason() is None, reason="a GPU is present")


def test_gpu_algorithms_are_listed_without_a_gpu():
    assert convbench.algorithms("gpu") == GPU_NAMES


@no_gpu
@pytest.mark.parametrize("name", GPU_NAMES)
def test_gpu_kernels_skip_with_what_is_missing(name):
    rec = measure(make_task(SMALL, name, backend="gpu", mode="both"))
    assert rec["status"] == "skipped"
    assert any(word in rec["reason"] for word in ("CuPy", "GPU", "CUDA", "install")), rec


@no_gpu
def test_conv2d_on_gpu_says_why_it_cannot():
    p = ConvProblem.parse(SMALL)
    x = np.zeros(p.input_shape, np.float32)
    w = np.zeros(p.weight_shape, np.float32)
    with pytest.raises(UnsupportedProblem, match="gpu im2col cannot run"):
        convbench.conv2d(x, w, padding=1, algo="im2col", backend="gpu")


def test_gpu_modules_import_without_touching_cupy():
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "cupy" or name.startswith("cupy.") or name == "cudnn":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
import convbench
names = convbench.algorithms("gpu")
from convbench.registry import get_kernel
reason = get_kernel("winograd", "gpu").supports(convbench.ConvProblem.parse("mb1ic4ih9oc4kh3"))
assert "cupy" not in sys.modules, "a GPU module imported CuPy"
print(names, reason)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "CuPy" in done.stdout and "'torch_cudnn'" in done.stdout


@pytest.fixture
def fresh_reason():
    runtime.cupy_unavailable_reason.cache_clear()
    yield
    runtime.cupy_unavailable_reason.cache_clear()


def test_cupy_without_a_driver_means_no_gpu(monkeypatch, fresh_reason):
    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver is insufficient")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    reason = runtime.cupy_unavailable_reason()
    assert reason.startswith("no GPU present") and "insufficient" in reason


def test_cupy_with_zero_devices_means_no_gpu(monkeypatch, fresh_reason):
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert runtime.cupy_unavailable_reason() == "no GPU present (CUDA reports 0 devices)"


def test_tf32_is_refused_for_strict_fp32(monkeypatch):
    monkeypatch.setattr(runtime, "cupy_unavailable_reason", lambda: None)
    monkeypatch.setenv("CUPY_TF32", "1")
    assert "TF32" in runtime.CupyRuntime().unavailable_reason()
    monkeypatch.setenv("CUPY_TF32", "0")
    assert runtime.CupyRuntime().unavailable_reason() is None


# ------------------------------------------------- CONVBENCH_REQUIRE_GPU=1: fail, not skip
ROOT = Path(__file__).parents[1]


@pytest.fixture
def fresh_cudnn_reason():
    runtime.cudnn_unavailable_reason.cache_clear()
    yield
    runtime.cudnn_unavailable_reason.cache_clear()


def test_a_cudnn_frontend_whose_library_fails_to_load_means_no_cudnn(monkeypatch,
                                                                      fresh_cudnn_reason):
    def no_library():
        raise RuntimeError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setitem(sys.modules, "cudnn", types.SimpleNamespace(backend_version=no_library))
    reason = runtime.cudnn_unavailable_reason()
    assert reason.startswith("the cuDNN library failed to load") and "libcudnn" in reason
    monkeypatch.setitem(sys.modules, "cudnn", types.SimpleNamespace(backend_version=lambda: 91900))
    runtime.cudnn_unavailable_reason.cache_clear()
    assert runtime.cudnn_unavailable_reason() is None


def test_the_switch_reads_1_as_required_and_0_or_unset_as_not(monkeypatch):
    monkeypatch.delenv(runtime.REQUIRE_GPU_ENV, raising=False)
    assert not runtime.gpu_required()
    monkeypatch.setenv(runtime.REQUIRE_GPU_ENV, "0")
    assert not runtime.gpu_required()
    monkeypatch.setenv(runtime.REQUIRE_GPU_ENV, "1")
    assert runtime.gpu_required()


def _run_gpu_test_file(require: str | None) -> subprocess.CompletedProcess:
    """pytest on one GPU test file in a new process, CONVBENCH_REQUIRE_GPU set or not."""
    env = {k: v for k, v in os.environ.items() if k != runtime.REQUIRE_GPU_ENV}
    if require is not None:
        env[runtime.REQUIRE_GPU_ENV] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_gpu_backward_device.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_require_gpu_fails_the_gpu_tests_with_what_is_missing_instead_of_skipping():
    blockers = runtime.gpu_test_blockers()
    if not blockers:
        pytest.skip("a GPU and cuDNN are present: the GPU tests run")
    required = _run_gpu_test_file("1")
    assert required.returncode == 1, required.stdout + required.stderr
    message = runtime.require_gpu_message(blockers)
    assert "CONVBENCH_REQUIRE_GPU=1 is set" in message
    assert message in required.stdout
    summary = required.stdout.strip().splitlines()[-1]
    assert " error" in summary and "skipped" not in summary and "passed" not in summary
    no_gpu_reason = runtime.cupy_unavailable_reason()
    if no_gpu_reason is not None:
        # Without the switch the same tests skip, with the reason, as before.
        unset = _run_gpu_test_file(None)
        assert unset.returncode == 0, unset.stdout + unset.stderr
        assert f"needs a GPU: {no_gpu_reason}" in unset.stdout
        assert message not in unset.stdout


# ------------------------------------------------------------ cuDNN plan choice
PLANS = [
    CudnnPlan(0, "eng0", 0, ["TENSOR_CORE", "DOWN_CONVERT_INPUTS"], median_s=1e-4),
    CudnnPlan(1, "eng1", 1024, ["WINOGRAD", "WINOGRAD_TILE_4x4"], median_s=3e-4),
    CudnnPlan(2, "eng2", 0, [], median_s=2e-4),
    CudnnPlan(3, "eng3", 4096, ["FFT"], failure="CUDNN_STATUS_NOT_SUPPORTED"),
    CudnnPlan(4, "eng4", 0, ["TENSOR_CORE", "REDUCED_PRECISION_REDUCTION"], median_s=5e-5),
]


def test_engines_are_classified_by_their_notes():
    assert [pl.algorithm for pl in PLANS] == ["gemm/direct", "winograd", "gemm/direct", "fft",
                                              "gemm/direct"]


def test_strict_fp32_excludes_tf32_engines():
    assert inadmissible_reason(PLANS[0].notes, "fp32") is not None
    assert inadmissible_reason(PLANS[0].notes, "fp16") is None
    assert choose_plan(PLANS, "fp32", "heuristic").index == 1  # first admissible
    assert choose_plan(PLANS, "fp32", "best").index == 2       # fastest admissible


def test_tf32_admits_tensor_core_engines():
    assert inadmissible_reason(PLANS[0].notes, "tf32") is None
    assert choose_plan(PLANS, "tf32", "best").index == 4  # the fastest: TF32 tensor cores


def test_fp16_excludes_fp16_accumulation():
    assert choose_plan(PLANS, "fp16", "best").index == 0  # eng4 is faster but fp16-accumulating
    assert choose_plan(PLANS, "fp64", "heuristic").index == 0


def test_no_admissible_plan_is_unsupported():
    with pytest.raises(UnsupportedProblem, match="no admissible plan"):
        choose_plan(PLANS[:1], "fp32", "heuristic")


# ------------------------------------------------------------------ GPU timing
class FakeClock:
    """Device clock whose runs take 1 ms of 'device time'; logs the call order."""

    def __init__(self):
        self.log = []

    def start(self):
        self.log.append("start")

    def stop(self):
        self.log.append("stop")
        return 1e-3

    def synchronize(self):
        self.log.append("sync")

    def flush_l2(self):
        self.log.append("flush")


@pytest.mark.parametrize("flush", [False, True])
def test_device_timing_protocol(flush):
    clock = FakeClock()
    calls = []
    timing = bench(lambda: calls.append(clock.log.count("start")), clock=clock,
                   min_reps=3, min_time=0.01, warmup=2, flush_l2=flush)
    assert timing.reps == 10 and timing.times_s == [1e-3] * 10  # 10 x 1 ms >= min_time
    assert len(calls) == 1 + 2 + 10  # first call and warm-up are not timed
    assert calls[:3] == [0, 0, 0]
    timed = [e for e in clock.log if e != "sync"]
    unit = ["flush", "start", "stop"] if flush else ["start", "stop"]
    assert timed == unit * 10  # the flush is outside the events, before every run


def test_device_timing_rejects_bad_settings():
    with pytest.raises(ValueError, match="min_reps must be >= 1"):
        bench(lambda: None, clock=FakeClock(), min_reps=0)


# ------------------------------------------------------------- runner records
class OomError(MemoryError):
    """Like CuPy's ``cupy.cuda.memory.OutOfMemoryError``, a ``MemoryError`` subclass."""


OomError.__name__ = "OutOfMemoryError"


class FakeGpuKernel(KernelBase):
    backend = "gpu"

    def __init__(self, name, fail=False):
        self.name = name
        self.fail = fail

    def prepare_call(self, p, x, w, b):
        if self.fail:
            raise OomError("out of memory allocating 81,604,378,624 bytes")
        from convbench.problem.reference import reference_for

        def run():
            return reference_for(p, x, w, b).astype(np.float32)

        return Prepared(run, {"engine": "fake"})


@pytest.fixture
def fake_gpu_kernels():
    kernels = [FakeGpuKernel("fake_ok"), FakeGpuKernel("fake_oom", fail=True)]
    for k in kernels:
        register(k)
    yield
    for k in kernels:
        unregister(k.name, "gpu")


def test_out_of_device_memory_is_a_skip_and_details_are_recorded(fake_gpu_kernels):
    oom = measure(make_task(SMALL, "fake_oom", backend="gpu"))
    assert oom["status"] == "skipped" and oom["reason"].startswith(OUT_OF_GPU_MEMORY)
    assert OUT_OF_GPU_MEMORY == "out of GPU memory"  # as the GPU guide and the device test say
    ok = measure(make_task(SMALL, "fake_ok", backend="gpu"))
    assert ok["status"] == "ok" and ok["details"] == {"engine": "fake"}
    assert ok["math_mode"] == "fp32 strict (no TF32)" and ok["error"]["rel_l2"] < 1e-6


def test_oom_detection_is_specific():
    assert is_device_oom(OomError("x"))
    assert not is_device_oom(RuntimeError("out of memory"))  # only device OOM types


def test_cupy_fp16_gemms_accumulate_in_fp32_when_cupy_is_installed():
    """CuPy's compute-type switch works without a device (checked where CuPy is installed)."""
    pytest.importorskip("cupy", reason="CuPy not installed")
    assert runtime.set_fp16_gemm_accumulation_fp32() == "COMPUTE_TYPE_FP32"


# --------------------------------------------------------- cuDNN graph geometry
class FakeCudnnGraph:
    """Records what ``conv_fprop`` is given, and checks it as cuDNN's validate() does."""

    def __init__(self, **kwargs):
        self.tensors = {}
        self.conv = None

    def tensor(self, name, dim, stride, data_type):
        self.tensors[name] = (dim, stride)
        return name

    def conv_fprop(self, image, weight, pre_padding, post_padding, stride, dilation,
                   compute_data_type):
        self.conv = (pre_padding, post_padding, stride, dilation)
        graph = self

        class Output:
            def set_output(self, flag):
                return self

            def set_data_type(self, dt):
                return self

            def set_dim(self, dim):
                graph.output_dim = dim
                return self

            def set_stride(self, stride):
                return self

        return Output()

    def validate(self):
        (_, _, h, w), _ = self.tensors["X"]
        (_, _, r, s), _ = self.tensors["W"]
        pre, post, stride, dilation = self.conv
        if min(pre + post) < 0:
            raise RuntimeError("CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR: cudnnFinalize Fail")
        oh = (h + pre[0] + post[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
        ow = (w + pre[1] + post[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
        if [oh, ow] != self.output_dim[2:]:
            raise RuntimeError(f"output {self.output_dim[2:]} != cuDNN's {[oh, ow]}")

    def build_operation_graph(self):
        pass

    def create_execution_plans(self, modes):
        pass


def fake_cudnn():
    enum = types.SimpleNamespace
    return enum(data_type=enum(FLOAT="f", HALF="h", DOUBLE="d"),
                heur_mode=enum(A="A", FALLBACK="F"), pygraph=FakeCudnnGraph)


STRIDED_1X1 = [layer.problem for suite in ("resnet50", "deepbench") for layer in
               __import__("convbench.problem.suites", fromlist=["load_suite"]).load_suite(suite)
               if layer.problem is not None and min(layer.problem.padding[0][1],
                                                     layer.problem.padding[1][1]) < 0]


@pytest.mark.parametrize("desc", [
    *(str(p) for p in STRIDED_1X1),
    "mb2ic8ih11oc4kh1sh2",           # odd image: nothing to clamp
    "mb1ic4ih20oc4oh3kh3sh4",        # an oh below the natural 5: trailing rows never read
    "mb1ic4ih9iw12oc4kh3ph1sh2pw0sw3",
])
def test_cudnn_gets_nonnegative_padding_and_the_problems_output_size(desc, monkeypatch):
    """cuDNN refuses negative padding: ResNet-50's 1x1 stride-2 layers failed on the device."""
    from convbench.kernels.baselines import cudnn as cudnn_module

    monkeypatch.setattr(cudnn_module, "shared_handle", lambda: None)
    p = ConvProblem.parse(desc)
    graph, *_ = cudnn_module.CudnnFrontendBaseline("heuristic")._graph(fake_cudnn(), p)
    pre, post, _, _ = graph.conv
    assert min(pre + post) >= 0 and graph.output_dim == list(p.output_shape)
    (dim, stride) = graph.tensors["X"]
    assert stride == [p.ic * p.ih * p.iw, p.ih * p.iw, p.iw, 1]  # the caller's memory


def test_resnet50_has_the_strided_1x1_layers_the_device_run_failed_on():
    assert {p.name for p in STRIDED_1X1} >= {"res3a_branch1", "res4a_branch2a", "res5a_branch1"}


class _DeviceArray:
    """Just enough of a CUDA array for argument validation (shape, dtype, the interface)."""

    __cuda_array_interface__ = {"version": 3}

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)


class _AnyGpu(KernelBase):
    """A GPU kernel that supports everything: conv2d's empty batch never reaches it."""

    name, backend = "test_any_gpu", "gpu"


def test_an_empty_batch_on_the_gpu_returns_a_device_array(monkeypatch):
    fake = types.ModuleType("cupy")
    fake.ascontiguousarray = lambda a: a
    fake.empty = lambda shape, dtype: _DeviceArray(shape, dtype)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    register(_AnyGpu())
    try:
        y = convbench.conv2d(_DeviceArray((0, 4, 9, 9), np.float32),
                             _DeviceArray((4, 4, 3, 3), np.float32), padding=1,
                             algo="test_any_gpu", backend="gpu")
    finally:
        unregister("test_any_gpu", "gpu")
    assert isinstance(y, _DeviceArray) and y.shape == (0, 4, 9, 9) and y.dtype == np.float32
