"""Registry, kernel protocol, plug-ins and algo="auto"."""

import numpy as np
import pytest

import convbench
from convbench import ConvProblem, UnsupportedProblem, registry


def test_algorithms_lists_the_four_cpu_kernels_first():
    assert convbench.algorithms("cpu")[:4] == ["direct", "im2col", "fft", "winograd"]
    for name in ("direct", "im2col", "fft", "winograd"):
        kernel = convbench.get_kernel(name, "cpu")
        assert isinstance(kernel, convbench.Kernel)
        assert (kernel.name, kernel.backend, kernel.kind) == (name, "cpu", "kernel")


def test_supports_answers_without_running():
    p = ConvProblem.parse("mb1ic8ih8oc8kh5ph2")
    assert convbench.get_kernel("winograd").supports(p) == \
        "winograd F(2x2,3x3) needs a 3x3 filter, got 5x5"
    assert convbench.get_kernel("winograd").supports(p.with_(kh=3, kw=3, sh=2)) == \
        "winograd F(2x2,3x3) needs stride 1, got (2, 1)"
    assert convbench.get_kernel("winograd").supports(p.with_(kh=3, kw=3, dil_w=2)) == \
        "winograd F(2x2,3x3) needs dilation 1, got (1, 2)"
    for name in ("direct", "im2col", "fft"):
        assert convbench.get_kernel(name).supports(p) is None


class _Negating(convbench.KernelBase):
    """A toy third-party kernel: -direct, to prove dispatch reaches it."""

    name = "negated_direct"

    def supports(self, p):
        return None if p.g == 1 else "groups unsupported"

    def prepare_call(self, p, x, w, bias):
        inner = convbench.get_kernel("direct").prepare(p, x, w, bias)
        return lambda: -inner()


class _Bare:
    """The contract written out by hand, without the base class."""

    name, backend, kind, clock, caches_weights = "bare", "cpu", "kernel", "host", False

    def supports(self, p):
        return None

    def math_mode(self, p):
        return "fp32 strict"

    def error_model(self, p):
        return convbench.ErrorModel("direct")

    def workspace_bytes(self, p):
        return 0

    def prepare(self, p, x, w, bias):
        return lambda: convbench.reference(x, w, bias).astype(x.dtype)


def test_register_a_kernel_and_dispatch_to_it():
    kernel = convbench.register(_Negating())
    try:
        assert "negated_direct" in convbench.algorithms("cpu")
        x = np.ones((1, 2, 4, 4), np.float32)
        w = np.ones((2, 2, 3, 3), np.float32)
        np.testing.assert_array_equal(convbench.conv2d(x, w, algo="negated_direct"),
                                      -np.full((1, 2, 2, 2), 18.0, np.float32))
        with pytest.raises(UnsupportedProblem, match="groups unsupported"):
            convbench.conv2d(x, w[:, :1], groups=2, algo="negated_direct")
        with pytest.raises(ValueError, match="already registered"):
            convbench.register(_Negating())
        convbench.register(kernel, replace=True)
    finally:
        registry.unregister("negated_direct", "cpu")
    assert "negated_direct" not in convbench.algorithms("cpu")


@pytest.mark.parametrize("bad, message", [
    (object(), "does not implement the Kernel protocol"),
    (type("K", (_Negating,), {"backend": "fpga"})(), "backend must be one of"),
    (type("K", (_Negating,), {"kind": "library"})(), "kind must be one of"),
    (type("K", (_Negating,), {"clock": "sundial"})(), "clock must be one of"),
    (type("K", (_Bare,), {"clock": property(lambda self: None)})(), "clock must be one of"),
])
def test_register_rejects_non_kernels(bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        convbench.register(bad)


@pytest.mark.parametrize("desc, expected", [
    ("mb1ic64ih56oc64kh3ph1", "winograd"),
    ("mb1ic256ih56oc64kh1", "im2col"),
    ("mb1ic3ih224oc64kh7sh2ph3", "im2col"),
    ("g32mb1ic32ih56oc32kh3ph1", "im2col"),
    ("mb1ic32ih28oc32kh7ph3", "fft"),
    ("mb1ic64ih56oc64kh3sh2ph1", "im2col"),
])
def test_auto_rule(desc, expected):
    assert convbench.auto_kernel(ConvProblem.parse(desc)).name == expected


def test_auto_runs_and_is_correct():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 16, 10, 10)).astype(np.float32)
    w = rng.uniform(-1, 1, (16, 16, 3, 3)).astype(np.float32)
    y = convbench.conv2d(x, w, padding=1, algo="auto")
    ref = convbench.reference(x, w, padding=1)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5


def test_a_hand_written_kernel_registers_and_runs():
    kernel = convbench.register(_Bare())
    try:
        x = np.ones((1, 2, 4, 4), np.float32)
        w = np.ones((2, 2, 3, 3), np.float32)
        np.testing.assert_array_equal(convbench.conv2d(x, w, algo="bare"),
                                      np.full((1, 2, 2, 2), 18.0, np.float32))
        assert kernel.math_mode(ConvProblem.parse("ic2ih4oc2kh3")) == "fp32 strict"
    finally:
        registry.unregister("bare", "cpu")


def test_missing_members_are_named():
    class Half:
        name, backend, kind = "half", "cpu", "kernel"

    with pytest.raises(TypeError, match="missing clock, caches_weights, supports, math_mode"):
        convbench.register(Half())


def test_kernel_base_refuses_what_supports_refuses():
    p = ConvProblem.parse("g2mb1ic4ih4oc2kh3")
    x, w = np.ones(p.input_shape, np.float32), np.ones(p.weight_shape, np.float32)
    with pytest.raises(UnsupportedProblem, match="groups unsupported"):
        _Negating().prepare(p, x, w, None)


def test_every_kernel_refuses_the_directions_it_does_not_list():
    from dataclasses import replace

    from convbench.contract import kernel_directions, refusal
    from convbench.problem import DIRECTIONS
    p = ConvProblem.parse("--dir=FWD_B mb1ic4ih6oc4kh3")
    for kernel in registry.kernels():
        listed = kernel_directions(kernel)
        assert "fwd" in listed and set(listed) <= set(DIRECTIONS), kernel.name
        for direction in set(DIRECTIONS) - set(listed):
            q = replace(p, dir=direction)
            reason = f"{kernel.backend} {kernel.name} does not compute {direction}"
            assert kernel.supports(q) == reason and refusal(kernel, q) == reason
            if isinstance(kernel, convbench.KernelBase):
                with pytest.raises(UnsupportedProblem, match=reason):
                    kernel.prepare(q, None, None, None)
    # A kernel that overrides supports without asking the base, or one written without
    # it, is still refused by the harness's question and by the base's prepare.
    q = replace(p, dir="bwd_w")
    assert refusal(_Bare(), q) == "cpu bare does not compute bwd_w"
    assert refusal(_Negating(), q) == "cpu negated_direct does not compute bwd_w"
    assert refusal(_Negating(), p) is None
    with pytest.raises(UnsupportedProblem, match="does not compute bwd_w"):
        _Negating().prepare(q, None, None, None)
