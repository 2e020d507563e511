"""Shared fixtures and test settings."""

import os
import zlib
from pathlib import Path

#: One Numba cache folder, ``.numba-cache`` at the top of the checkout, for this process and
#: every process a test starts (they inherit the variable); ``make test`` gives ``convbench
#: check`` the same one. Numba's default, beside each kernel's source, is shared too but
#: needs a writable source tree, and one folder is one thing to delete or keep between CI
#: runs. Set before anything imports Numba, which reads it then; a caller's choice stays.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent
                                             / ".numba-cache"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs derandomized property tests so a red CI is reproducible; locally they
# explore new examples each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

TESTS = Path(__file__).parent

def envelope_ratio(kernel, p, x, w, b, y, fill="random"):
    """``y``'s worst error in units of ``kernel``'s error envelope: <= 1 is correct.

    The rule ``convbench check`` applies (convbench.measure.compare.envelope).
    """
    from convbench.measure.compare import envelope
    from convbench.measure.metrics import error_metrics, reference_and_scales

    reference = reference_and_scales(p, x, w, b)
    limit = envelope(p, reference, kernel.error_model(p), exact_fill=fill == "exact")
    return error_metrics(y, reference, p.dtype, limit)["envelope_ratio"]


def rel_l2(y, ref):
    ref = np.asarray(ref, dtype=np.float64)
    diff = np.linalg.norm(np.asarray(y, dtype=np.float64) - ref)
    norm = np.linalg.norm(ref)
    return diff / norm if norm else diff


def random_inputs(p, seed=0):
    """Uniform [-1, 1] inputs for problem ``p`` in its dtype."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, p.input_shape).astype(p.dtype)
    w = rng.uniform(-1, 1, p.weight_shape).astype(p.dtype)
    b = rng.uniform(-1, 1, p.oc).astype(p.dtype) if p.bias else None
    return x, w, b


@pytest.fixture
def make_inputs():
    return random_inputs


@pytest.fixture
def case_seed(request):
    """A seed of this test case that every process agrees on: ``zlib.crc32`` of its name.

    ``hash()`` of a string changes from one process to the next; this does not,
    so a failing case reruns on the same data. The seed is shown in the report
    of a failing test (section "seed").
    """
    name = request.node.name
    seed = zlib.crc32(name.encode())
    request.node.add_report_section("call", "seed", f"seed {seed} = zlib.crc32({name!r})")
    return seed


def documented_refusal(kernel, p):
    """Why ``kernel`` refuses ``p`` (``None``: it runs it), asserting the reason is documented.

    A refusal that matches none of the kernel's documented ones
    (:func:`convbench.contract.documented_refusals`) is a bug that would
    otherwise pass as a skip.
    """
    from convbench.contract import is_documented_refusal, refusal

    reason = refusal(kernel, p)
    assert reason is None or is_documented_refusal(kernel, reason), (
        f"{kernel.backend} {kernel.name} refuses {p} with a reason it does not document: "
        f"{reason!r}")
    return reason


def skip_if_refused(kernel, p):
    """Skip the test where ``kernel`` refuses ``p`` for a reason it documents; fail otherwise."""
    __tracebackhide__ = True  # the skip is reported at the test's line, not here
    reason = documented_refusal(kernel, p)
    if reason is not None:
        pytest.skip(reason)


def make_task(problem, kernel, *, backend="cpu", mode="accuracy", suite="test", name=None,
              min_reps=1, min_time=0.0, max_time=1.0, **settings):
    """A one-measurement Task from a descriptor or ConvProblem (quick timing by default)."""
    from convbench import ConvProblem
    from convbench.measure.runner import SweepSettings, Task
    from convbench.problem.suites import SuiteLayer

    p = ConvProblem.parse(problem) if isinstance(problem, str) else problem
    if name is not None:
        p = p.with_(name=name)
    return Task(SuiteLayer(p), kernel, SweepSettings(backend=backend, mode=mode,
                                                     min_reps=min_reps, min_time=min_time,
                                                     max_time=max_time, **settings), suite)


#: What the GPU kernels promise in fp16 and tf32, beside their envelopes: rel_l2 within
#: 2e-3 of the float64 reference, as cuDNN's admissible plans deliver.
FP16_TARGET = 2e-3


#: Where collection leaves the message ``gpu``-marked tests fail with (CONVBENCH_REQUIRE_GPU=1).
_GPU_REQUIRED_FAILURE = pytest.StashKey[str]()


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu``-marked tests, with the reason, where no CUDA device is usable.

    With ``CONVBENCH_REQUIRE_GPU=1`` (a device run) they are not skipped: where
    CuPy, the driver, a device or cuDNN is missing or broken, each fails at
    setup with one message saying what is missing (:func:`pytest_runtest_setup`).
    """
    from convbench.kernels.gpu import runtime

    if not any("gpu" in item.keywords for item in items):
        return
    if runtime.gpu_required():
        blockers = runtime.gpu_test_blockers()
        if blockers:
            config.stash[_GPU_REQUIRED_FAILURE] = runtime.require_gpu_message(blockers)
        return
    reason = runtime.cupy_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs a GPU: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say once, in the summary, why the GPU tests failed under CONVBENCH_REQUIRE_GPU=1."""
    message = config.stash.get(_GPU_REQUIRED_FAILURE, None)
    if message is not None:
        terminalreporter.write_line(message, red=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Fail a ``gpu``-marked test before its fixtures where CONVBENCH_REQUIRE_GPU=1 and the
    GPU is unusable: a device run must not pass by skipping."""
    message = item.config.stash.get(_GPU_REQUIRED_FAILURE, None)
    if message is not None and "gpu" in item.keywords:
        pytest.fail(message, pytrace=False)


@pytest.fixture
def faulty_env(monkeypatch):
    """Register tests/faulty_kernels.py in this process and in spawned workers."""
    monkeypatch.setenv("CONVBENCH_KERNEL_MODULES", "faulty_kernels")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(TESTS), os.environ.get("PYTHONPATH", "")])))
    monkeypatch.syspath_prepend(str(TESTS))
    from convbench import registry

    registry._ensure_loaded()
    import faulty_kernels

    for kernel in faulty_kernels.KERNELS:
        registry.register(kernel, replace=True)
    yield
    for kernel in faulty_kernels.KERNELS:
        registry.unregister(kernel.name, "cpu")


@pytest.fixture(autouse=True)
def quick_timed_choices(request, monkeypatch):
    """Kernels' timed choices at ``prepare`` (Winograd's schedules, im2col's GEMM forms) in
    one round of short samples and short warm-ups instead of five rounds of benchmark-like
    ones: the tests check what every schedule computes, which the choice does not change,
    and the full choice made them 2 minutes (15%) slower. ``test_cooldown.py`` tests the
    choice itself with its real settings."""
    if request.module.__name__.endswith("test_cooldown"):
        return
    from convbench.kernels.cpu import base

    monkeypatch.setattr(base, "FASTEST_ROUNDS", 1)
    monkeypatch.setattr(base, "FASTEST_SAMPLE_S", 0.002)
    monkeypatch.setattr(base, "WARM_S", 0.005)
