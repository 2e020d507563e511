"""Every suite layer x every registered CPU kernel x direction, timed by pytest-benchmark.

GFLOP/s (direct-convolution count, the same in every direction), rel_l2,
bound_ratio and envelope_ratio against the float64 reference and the
descriptor go into ``extra_info``, so ``--benchmark-json`` keeps them.
``--direction fwd,bwd_d,bwd_w`` times the backward passes too (default fwd).
"""

from dataclasses import replace

from convbench.contract import refusal
from convbench.measure.compare import output_errors
from convbench.measure.inputs import random_inputs
from convbench.measure.metrics import reference_and_scales
from convbench.registry import get_kernel


def test_layer(benchmark, layer, algo, direction):
    import pytest

    p = layer.problem
    if direction != "fwd":
        p = replace(p, dir=direction, bias=direction == "bwd_wb")
    kernel = get_kernel(algo, "cpu")
    reason = refusal(kernel, p)
    if reason is not None:
        pytest.skip(reason)
    a, b, bias = random_inputs(p)
    fn = kernel.prepare(p, a, b, bias)
    fn()  # compile / load from cache outside the timed rounds
    y = benchmark(fn)
    errors = output_errors(p, y, reference_and_scales(p, a, b, bias), kernel.error_model(p))
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(problem=str(p), dir=p.dir, repeat=layer.repeat,
                                kind=kernel.kind, gflops=p.flops / median / 1e9,
                                rel_l2=errors["rel_l2"], bound_ratio=errors["bound_ratio"],
                                envelope_ratio=errors["envelope_ratio"])
    assert errors["envelope_ratio"] <= 1.0, f"{algo} {p}: {errors}"
