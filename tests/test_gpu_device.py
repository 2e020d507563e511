"""On a CUDA device: the GPU kernels and baselines against the float64 reference.

Marked ``gpu``: skipped, with the reason, where no device is usable (CI). The
CPU kernels' problem grid, each output within its kernel's error envelope;
float16 (fp32 accumulation) also within rel_l2 <= 2e-3.
"""

import numpy as np
import pytest
from conftest import (
    FP16_TARGET,
    envelope_ratio,
    make_task,
    random_inputs,
    rel_l2,
    skip_if_refused,
)
from problem_grid import GRID

from convbench import ConvProblem, ErrorModel
from convbench.measure.runner import measure
from convbench.problem import to_host
from convbench.problem.reference import reference_for
from convbench.registry import get_kernel

pytestmark = pytest.mark.gpu

KERNELS = ["direct", "im2col", "fft", "winograd"]
BASELINES = ["cudnn", "cudnn_best", "torch_cudnn"]


def _inputs(p):
    if p.dtype == "float16":
        return [None if a is None else a.astype(np.float16)
                for a in random_inputs(p.with_(dtype="float32"))]
    return random_inputs(p)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("algo", KERNELS)
@pytest.mark.parametrize("shape, kwargs", GRID)
def test_gpu_kernel_matches_reference(shape, kwargs, algo, dtype):
    import cupy

    p = ConvProblem.make(*shape, dtype=dtype, **kwargs)
    kernel = get_kernel(algo, "gpu")
    reason = kernel.supports(p)
    if reason is not None:
        assert algo == "winograd" and "winograd F(2x2,3x3) needs" in reason, reason
        return
    x, w, b = _inputs(p)
    y = kernel.prepare(p, cupy.asarray(x), cupy.asarray(w), None if b is None else
                       cupy.asarray(b))()
    assert isinstance(y, cupy.ndarray) and y.shape == p.output_shape
    assert y.dtype == np.dtype(dtype)
    ratio = envelope_ratio(kernel, p, x, w, b, cupy.asnumpy(y))
    assert ratio <= 1, f"{algo} {dtype} {p}: {ratio:.3g} of its error envelope"
    if dtype == "float16":
        assert rel_l2(cupy.asnumpy(y), reference_for(p, x, w, b)) <= FP16_TARGET


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("desc", ["mb2ic16ih14oc32kh3ph1", "mb1ic32ih7oc64kh1",
                                  "g4mb1ic16ih9oc16kh3sh2ph1", "mb1ic3ih31oc8kh5ph2_bias"])
def test_gpu_baselines_match_reference(desc, name, dtype):
    p = ConvProblem.parse(desc.replace("_bias", "")).with_(dtype=dtype,
                                                           bias=desc.endswith("_bias"))
    kernel = get_kernel(name, "gpu")
    skip_if_refused(kernel, p)
    x, w, b = _inputs(p)
    fn = kernel.prepare(p, x, w, b)
    y = to_host(fn())
    chosen = fn.details.get("error_model")  # cuDNN: the model of the engine it chose
    model = kernel.error_model(p) if chosen is None else ErrorModel(**chosen)

    class Chosen:
        def error_model(self, _p):
            return model

    assert envelope_ratio(Chosen(), p, x, w, b, y) <= 1, f"{name} {dtype}"
    if dtype == "float16":
        assert rel_l2(y, reference_for(p, x, w, b)) <= FP16_TARGET
    if name == "cudnn_best":
        plans = fn.details["plans"]
        assert plans and all("name" in pl and "workspace_bytes" in pl for pl in plans)
        timed = [pl for pl in plans if pl["admissible"] and pl["median_s"] is not None]
        assert fn.details["chosen"] == min(timed, key=lambda pl: pl["median_s"])["index"]


def test_sweep_record_on_gpu_has_events_and_math_mode():
    rec = measure(make_task("mb1ic16ih14oc16kh3ph1", "winograd", backend="gpu", mode="both",
                            min_reps=3, min_time=0.01, max_time=5.0, flush_l2=True))
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["time"]["clock"] == "cuda-events" and rec["time"]["flush_l2"] is True
    assert rec["math_mode"] == "fp32 strict (no TF32)"
    assert rec["error"]["rel_l2"] <= 1e-5


def test_out_of_device_memory_is_a_skipped_record():
    """A lowered matrix of ~129 GB (inputs of 134 MB): more than any current GPU holds."""
    from convbench.kernels.gpu.im2col import GpuIm2colKernel
    from convbench.registry import register, unregister

    uncapped = GpuIm2colKernel(workspace_cap=2**50)
    uncapped.name = "im2col_uncapped"
    register(uncapped)
    try:
        rec = measure(make_task("mb8ic256ih128oc8kh31ph15", "im2col_uncapped", backend="gpu",
                                mode="perf"))
    finally:
        unregister("im2col_uncapped", "gpu")
    assert rec["status"] == "skipped", rec
    assert rec["reason"].startswith("out of GPU memory")
