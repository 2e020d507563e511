"""Documented refusals: every reason a kernel gives for refusing a problem is one it declares.

A test that skips where a kernel refuses (``conftest.skip_if_refused``) would
otherwise pass on a kernel that refuses by mistake; these tests hold the
declarations (``documented_refusals`` and the contract's own) to what the
kernels really say.
"""

import dataclasses
import sys
import types
from collections import Counter

import pytest
from conftest import documented_refusal, skip_if_refused
from problem_grid import GRID

from convbench import ConvProblem, KernelBase
from convbench.contract import CONTRACT_REFUSALS, documented_refusals, is_documented_refusal
from convbench.kernels.baselines import cudnn, onednn, torch_cudnn
from convbench.kernels.catalog import builtin_kernels
from convbench.kernels.cpu.fft import FftKernel
from convbench.kernels.gpu import runtime
from convbench.problem import DIRECTIONS

GPU_CLASSES = [type(k) for k in builtin_kernels() if k.backend == "gpu" and k.kind == "kernel"]
GPU_ALL = [k for k in builtin_kernels() if k.backend == "gpu"]
SMALL = ConvProblem.parse("mb1ic4ih9oc4kh3ph1")


def _kernels():
    """The built-in kernels as registered, and the GPU kernels on the host emulator."""
    return builtin_kernels() + [cls(runtime.HostRuntime()) for cls in GPU_CLASSES]


def _grid_problems():
    """The problem grid in every dtype and direction (the bias gradient with bwd_wb)."""
    for param in GRID:
        shape, kwargs = param.values
        for dtype in ("float16", "float32", "float64"):
            p = ConvProblem.make(*shape, dtype=dtype, **kwargs)
            for direction in DIRECTIONS:
                yield dataclasses.replace(p, dir=direction, bias=direction == "bwd_wb"
                                          or (direction == "fwd" and p.bias))


def test_every_refusal_on_the_problem_grid_is_documented():
    refused = Counter()
    for p in _grid_problems():
        for kernel in _kernels():
            if documented_refusal(kernel, p) is not None:
                refused[kernel.backend, kernel.name] += 1
    # The check saw refusals of each kind: dtypes, directions, Winograd's geometry.
    assert refused["cpu", "direct"] > 0 and refused["cpu", "numpy_im2col"] > 0
    assert refused["cpu", "winograd"] > refused["cpu", "direct"]


class _Refuses(KernelBase):
    name = "test_refuses"

    def supports(self, p):
        return "out of luck today"


class _RefusesAndSaysSo(_Refuses):
    name = "test_refuses_documented"
    documented_refusals = (r"^out of luck",)


def test_an_undocumented_refusal_fails_where_a_test_would_skip():
    assert not is_documented_refusal(_Refuses(), "out of luck today")
    with pytest.raises(AssertionError, match="does not document: 'out of luck today'"):
        documented_refusal(_Refuses(), SMALL)
    with pytest.raises(AssertionError, match="does not document"):
        skip_if_refused(_Refuses(), SMALL)
    # Declared, the same refusal is a skip.
    assert documented_refusal(_RefusesAndSaysSo(), SMALL) == "out of luck today"
    with pytest.raises(pytest.skip.Exception, match="out of luck today"):
        skip_if_refused(_RefusesAndSaysSo(), SMALL)
    assert documented_refusals(_RefusesAndSaysSo()) == (*CONTRACT_REFUSALS, r"^out of luck")


def test_a_workspace_over_the_cap_is_documented_for_every_kernel():
    reason = "fft needs 402653184 bytes of workspace, over the cap of 268435456 bytes"
    for kernel in _kernels():
        assert is_documented_refusal(kernel, reason), kernel.name
    assert is_documented_refusal(FftKernel(), "fft: one image needs 5000 bytes of workspace, "
                                              "over its workspace cap of 4096 bytes")
    assert not is_documented_refusal(FftKernel(), "fft needs 5000 bytes of workspace")
    # What the CPU kernels say when they refuse for want of workspace.
    from convbench.contract import workspace_refusal

    assert is_documented_refusal(FftKernel(), workspace_refusal(833617920, 268435456))


def test_every_missing_library_is_documented_for_the_kernel_that_needs_it():
    for kernel, hint in [(onednn.OneDnnBaseline(), onednn.INSTALL_HINT),
                         (cudnn.CudnnFrontendBaseline("best"), cudnn.INSTALL_HINT),
                         (torch_cudnn.TorchCudnnBaseline(), torch_cudnn.INSTALL_HINT),
                         *[(k, runtime.INSTALL_HINT) for k in GPU_ALL]]:
        assert is_documented_refusal(kernel, hint), (kernel.name, hint)


def _runtime_reasons(monkeypatch):
    """What the runtimes say where CuPy is broken, there is no device, CUPY_TF32 is set, or
    the emulator has no g++: each produced by the code that says it."""
    reasons = []
    broken = types.ModuleType("cupy")
    broken.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", broken)
    runtime.cupy_unavailable_reason.cache_clear()
    reasons.append(runtime.cupy_unavailable_reason())
    monkeypatch.setitem(sys.modules, "cupy", None)  # import raises ImportError
    runtime.cupy_unavailable_reason.cache_clear()
    reasons.append(runtime.cupy_unavailable_reason())
    runtime.cupy_unavailable_reason.cache_clear()
    monkeypatch.setattr(runtime, "cupy_unavailable_reason", lambda: None)
    monkeypatch.setenv("CUPY_TF32", "1")
    reasons.append(runtime.CupyRuntime().unavailable_reason())
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    reasons.append(runtime.HostRuntime().unavailable_reason())
    return reasons


def test_every_runtime_refusal_is_documented_by_the_gpu_kernels_and_baselines(monkeypatch):
    reasons = _runtime_reasons(monkeypatch)
    assert None not in reasons and "no GPU present (CUDA reports 0 devices)" in reasons
    for kernel in GPU_ALL:
        for reason in reasons:
            assert is_documented_refusal(kernel, reason), (kernel.name, reason)
    # The CPU kernels never meet these: they do not document them.
    assert not is_documented_refusal(FftKernel(), reasons[0])


def test_torch_without_cuda_is_a_documented_refusal_of_torch_cudnn(monkeypatch):
    cpu_torch = types.SimpleNamespace(__version__="2.13.0+cpu",
                                      cuda=types.SimpleNamespace(is_available=lambda: False))
    monkeypatch.setattr(torch_cudnn, "_torch", lambda: cpu_torch)
    reason = documented_refusal(torch_cudnn.TorchCudnnBaseline(), SMALL)
    assert reason.startswith("torch 2.13.0+cpu sees no CUDA device")
