"""convbench.plan: weights bound once, each call equal to conv2d, the transform not repeated.

The weight-binding contract (``reads_input_at_call``) is checked on every
kernel that claims it, the GPU kernels on the host emulator included: a
prepared call must convolve whatever its input buffer holds when it runs.
"""

import numpy as np
import pytest
from conftest import envelope_ratio, random_inputs, skip_if_refused

import convbench
from convbench import ConvProblem, KernelBase, UnsupportedProblem
from convbench.kernels.catalog import builtin_kernels
from convbench.kernels.cpu import fft as cpu_fft
from convbench.kernels.cpu import winograd as cpu_winograd
from convbench.kernels.cpu import winograd_tiles as cpu_winograd_tiles
from convbench.kernels.gpu.runtime import HostRuntime, cupy_unavailable_reason
from convbench.problem.reference import reference_for
from convbench.registry import kernels

#: Layers every kernel runs on: 3x3 padded (Winograd), 5x5 (FFT tiles), 1x1 (pointwise
#: GEMM), strided and grouped ones, with and without bias.
PROBLEMS = ['--dir=FWD_B mb2ic16ih12oc24kh3ph1n"c3x3"', 'mb1ic8ih20iw17oc8kh5ph2n"c5x5"',
            'mb3ic32ih7oc16kh1n"c1x1"', '--dir=FWD_B g2mb2ic8ih11oc12kh3sh2ph1n"c3x3s2g2"',
            'mb1ic3ih31oc8kh7sh2ph3n"c7x7s2"']

CPU_KERNELS = [k.name for k in kernels("cpu", kind="kernel")]
HOST = HostRuntime()
GPU_CLASSES = {k.name: type(k) for k in builtin_kernels()
               if k.backend == "gpu" and k.kind == "kernel"}


def _bound_kernels():
    """Every kernel claiming reads_input_at_call: the CPU ones, and the GPU ones emulated."""
    out = [pytest.param(k, id=f"cpu-{k.name}") for k in kernels("cpu")
           if getattr(k, "reads_input_at_call", False)]
    if HOST.unavailable_reason() is None:
        out += [pytest.param(cls(HOST), id=f"gpu-emulated-{name}")
                for name, cls in GPU_CLASSES.items()]
    return out


def test_the_builtin_kernels_claim_the_binding_and_the_torch_baselines_do_not():
    assert {k.name for k in kernels("cpu") if getattr(k, "reads_input_at_call", False)} \
        == {"direct", "im2col", "fft", "winograd", "winograd_4x4", "winograd_6x6"}
    assert not getattr(convbench.get_kernel("onednn"), "reads_input_at_call", False)
    assert all(getattr(cls(HOST), "reads_input_at_call", False) for cls in GPU_CLASSES.values())
    assert {k.name for k in kernels("cpu") if getattr(k, "takes_input_at_call", False)} \
        == {"direct", "im2col", "fft", "winograd", "winograd_4x4", "winograd_6x6"}
    assert all(cls(HOST).takes_input_at_call for cls in GPU_CLASSES.values())


def buffer_errors(kernel, p, *, as_argument=False):
    """Error of a prepared call (in units of its envelope) after each of two new inputs,
    written into the buffer it was prepared on or, ``as_argument``, passed to the call.
    Returns the errors and the call."""
    _, w, b = random_inputs(p, seed=1)
    buffer = np.zeros(p.input_shape, dtype=p.dtype)
    call = kernel.prepare(p, buffer, w, b)
    errors = []
    for seed in (2, 3):
        x = random_inputs(p, seed=seed)[0]
        if as_argument:
            y = np.array(call(x))
        else:
            buffer[...] = x
            y = np.array(call())  # a copy: the next call overwrites the kernel's buffer
        errors.append(envelope_ratio(kernel, p, x, w, b, y))
    return errors, call


def supported(kernel, desc):
    """The problem ``desc``, or a skip with the (documented) reason ``kernel`` gives."""
    p = ConvProblem.parse(desc)
    skip_if_refused(kernel, p)
    return p


@pytest.mark.parametrize("kernel", _bound_kernels())
@pytest.mark.parametrize("desc", PROBLEMS)
def test_a_kernel_that_reads_input_at_call_convolves_what_its_buffer_holds(kernel, desc):
    assert max(buffer_errors(kernel, supported(kernel, desc))[0]) <= 1


@pytest.mark.parametrize("kernel", _bound_kernels())
@pytest.mark.parametrize("desc", PROBLEMS)
def test_a_kernel_that_takes_input_at_call_convolves_the_array_it_is_given(kernel, desc):
    p = supported(kernel, desc)
    errors, call = buffer_errors(kernel, p, as_argument=True)
    assert max(errors) <= 1
    # Without an argument the call still reads the (all-zero) array it was prepared on.
    zeros = np.zeros(p.input_shape, dtype=p.dtype)
    _, w, b = random_inputs(p, seed=1)
    np.testing.assert_array_equal(np.asarray(call()), np.asarray(kernel.prepare(p, zeros, w, b)()))


class CopiesInputInPrepare(KernelBase):
    """Claims the binding but keeps a copy of x: what the check above must catch."""

    name = "test_claims_binding"
    reads_input_at_call = True

    def prepare_call(self, p, x, w, bias):
        x_kept = np.array(x)
        return lambda: reference_for(p, x_kept, w, bias).astype(p.dtype)


def test_the_binding_check_catches_a_kernel_that_copies_its_input():
    assert min(buffer_errors(CopiesInputInPrepare(), ConvProblem.parse(PROBLEMS[0]))[0]) > 10


@pytest.mark.parametrize("algo", [*CPU_KERNELS, "onednn", "numpy_im2col"])
@pytest.mark.parametrize("desc", PROBLEMS)
def test_plan_equals_conv2d_call_after_call(algo, desc):
    kernel = convbench.get_kernel(algo)
    p = supported(kernel, desc)
    _, w, b = random_inputs(p, seed=1)
    args = dict(stride=p.stride, padding=p.padding, dilation=p.dilation, groups=p.g)
    f = convbench.plan(p.input_shape, w, b, algo=algo, **args)
    assert f.kernel.name == algo and f.problem == p.with_(name="")
    assert f.weights_bound == (algo in CPU_KERNELS)
    for seed in (2, 3, 4):
        x = random_inputs(p, seed=seed)[0]
        y = f(x)
        assert isinstance(y, np.ndarray) and y.shape == p.output_shape and y.dtype == p.dtype
        # Same kernel, same operands, same summation order: bit for bit.
        np.testing.assert_array_equal(y, convbench.conv2d(x, w, b, algo=algo, **args))


def test_a_call_with_the_plans_own_buffer_needs_no_copy():
    p = ConvProblem.parse(PROBLEMS[0])
    x, w, b = random_inputs(p, seed=5)
    f = convbench.plan(x, w, b, padding=1, algo="winograd")
    f.input[...] = x
    np.testing.assert_array_equal(f(f.input), convbench.conv2d(x, w, b, padding=1,
                                                               algo="winograd"))


@pytest.mark.parametrize("algo", CPU_KERNELS)
def test_a_plan_reads_a_contiguous_input_where_it_is_and_copies_any_other(algo):
    p = ConvProblem.parse(PROBLEMS[0])
    _, w, b = random_inputs(p, seed=1)
    f = convbench.plan(p.input_shape, w, b, padding=1, algo=algo)
    x = random_inputs(p, seed=2)[0]
    np.testing.assert_array_equal(f(x), convbench.conv2d(x, w, b, padding=1, algo=algo))
    assert not f.input.any()  # read in place: the plan's buffer was never written
    # A strided view and a big-endian array cannot be read as the kernel was compiled:
    # they are copied into the buffer, and the result is the same.
    for other in (np.asfortranarray(x), x.astype(x.dtype.newbyteorder())):
        np.testing.assert_array_equal(f(other), convbench.conv2d(x, w, b, padding=1,
                                                                 algo=algo))
        np.testing.assert_array_equal(f.input, x)
        f.input[...] = 0


@pytest.mark.parametrize("algo", CPU_KERNELS)
def test_a_plan_given_its_own_output_reads_it_before_overwriting_it(algo):
    p = ConvProblem.parse('mb2ic8ih9oc8kh3ph1n"same shape"')  # output shape == input shape
    x, w, b = random_inputs(p, seed=6)
    f = convbench.plan(x, w, b, padding=1, algo=algo)
    y = f(x)
    twice = f(y)
    assert twice is y  # the plan's output buffer, read and overwritten by one call
    once = convbench.conv2d(x, w, b, padding=1, algo=algo)
    expected = convbench.conv2d(once, w, b, padding=1, algo=algo)
    np.testing.assert_array_equal(twice, expected)


def _count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize(("algo", "module", "transform"), [
    ("winograd", cpu_winograd, "filter_transform"),   # U = G g G^T
    ("winograd_6x6", cpu_winograd_tiles, "filter_transform"),
    ("fft", cpu_fft, "filter_spectra"),               # the filters' FFTs
])
@pytest.mark.parametrize("desc", [PROBLEMS[0], PROBLEMS[1]])
def test_a_plan_transforms_its_weights_once_and_conv2d_in_every_call(
        monkeypatch, algo, module, transform, desc):
    p = supported(convbench.get_kernel(algo), desc)
    x, w, b = random_inputs(p)
    args = dict(padding=p.padding)
    calls = _count_calls(monkeypatch, module, transform)
    f = convbench.plan(p.input_shape, w, b, algo=algo, **args)
    for _ in range(4):
        f(x)
    assert len(calls) == 1
    for _ in range(3):
        convbench.conv2d(x, w, b, algo=algo, **args)
    assert len(calls) == 4


class PreparedCounter(KernelBase):
    """A third party's kernel without ``reads_input_at_call``: it keeps a copy of x."""

    name = "test_copies_input"

    def __init__(self):
        self.prepared = 0

    def prepare_call(self, p, x, w, bias):
        self.prepared += 1
        x_kept = np.array(x)  # read in prepare: binding it once would be wrong

        def run():
            ref = reference_for(p, x_kept, w, bias)
            return ref.astype(p.dtype)

        return run


def test_a_kernel_without_the_hook_is_prepared_per_call_and_stays_correct():
    kernel = convbench.register(PreparedCounter(), replace=True)
    try:
        p = ConvProblem.parse(PROBLEMS[2])
        _, w, _ = random_inputs(p, seed=1)
        f = convbench.plan(p.input_shape, w, algo=kernel.name)
        assert not f.weights_bound and f.input is None and kernel.prepared == 0
        for seed in (2, 3):
            x = random_inputs(p, seed=seed)[0]
            np.testing.assert_allclose(f(x), convbench.reference(x, w), rtol=1e-5, atol=1e-5)
        assert kernel.prepared == 2
    finally:
        from convbench import registry

        registry.unregister(kernel.name, "cpu")


def test_plan_rejects_inputs_of_another_shape_dtype_or_device():
    p = ConvProblem.parse(PROBLEMS[0])
    x, w, b = random_inputs(p)
    f = convbench.plan(x, w, b, padding=1, algo="im2col")
    with pytest.raises(ValueError, match=r"shape \(2, 16, 12, 12\), got \(1, 16, 12, 12\)"):
        f(x[:1])
    with pytest.raises(TypeError, match="float32 inputs, got float64"):
        f(x.astype(np.float64))
    with pytest.raises(TypeError, match="NumPy arrays, got list"):
        f(x.tolist())
    with pytest.raises(ValueError, match="budget applies to algo='auto'"):
        convbench.plan(x, w, b, padding=1, algo="im2col", budget=1e-6)
    with pytest.raises(ValueError, match="shape"):
        convbench.plan((2, 16, 12), w, b, padding=1)
    with pytest.raises(ValueError, match="channel mismatch"):
        convbench.plan((2, 8, 12, 12), w, b, padding=1)
    with pytest.raises(UnsupportedProblem, match="winograd"):
        convbench.plan(x, w, b, stride=2, algo="winograd")


def test_plan_of_an_empty_batch_returns_empty_outputs():
    p = ConvProblem.parse(PROBLEMS[0]).with_(mb=0)
    _, w, b = random_inputs(p.with_(mb=1))
    f = convbench.plan(p.input_shape, w, b, padding=1, algo="fft")
    y = f(np.zeros(p.input_shape, dtype=np.float32))
    assert y.shape == (0, 24, 12, 12)


@pytest.mark.skipif(cupy_unavailable_reason() is None, reason="a GPU is present")
def test_a_gpu_plan_without_a_gpu_says_why():
    p = ConvProblem.parse(PROBLEMS[0])
    _, w, b = random_inputs(p)
    with pytest.raises(UnsupportedProblem, match="gpu winograd cannot run .*CuPy"):
        convbench.plan(p.input_shape, w, b, padding=1, backend="gpu", algo="winograd")


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["direct", "im2col", "fft", "winograd"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_gpu_plan_takes_and_returns_device_arrays_and_equals_conv2d(algo, dtype):
    import cupy

    p = ConvProblem.parse(PROBLEMS[0]).with_(dtype=dtype)
    _, w, b = random_inputs(p.with_(dtype="float32"), seed=1)
    w, b = w.astype(dtype), b.astype(dtype)
    f = convbench.plan(p.input_shape, w, b, padding=1, backend="gpu", algo=algo)
    assert f.weights_bound and isinstance(f.input, cupy.ndarray)
    for seed in (2, 3):
        x = cupy.asarray(random_inputs(p.with_(dtype="float32"), seed=seed)[0].astype(dtype))
        y = f(x)
        assert isinstance(y, cupy.ndarray) and y.dtype == dtype
        expected = convbench.conv2d(x, cupy.asarray(w), cupy.asarray(b), padding=1,
                                    algo=algo, backend="gpu")
        np.testing.assert_array_equal(cupy.asnumpy(y), cupy.asnumpy(expected))
