"""Every suite layer x every registered CPU kernel, timed by pytest-benchmark.

GFLOP/s (direct-convolution count), rel_l2 against the float64 reference and
the descriptor go into ``extra_info``, so ``--benchmark-json`` keeps them.
"""

from convbench.measure.inputs import random_inputs
from convbench.measure.metrics import error_metrics
from convbench.problem.reference import reference_for
from convbench.registry import get_kernel


def test_layer(benchmark, layer, algo):
    import pytest

    p = layer.problem
    kernel = get_kernel(algo, "cpu")
    reason = kernel.supports(p)
    if reason is not None:
        pytest.skip(reason)
    x, w, b = random_inputs(p)
    fn = kernel.prepare(p, x, w, b)
    fn()  # compile / load from cache outside the timed rounds
    y = benchmark(fn)
    ref, scale = reference_for(p, x, w, b), reference_for(p, x, w, b, absolute=True)
    errors = error_metrics(y, ref, scale, p.dtype)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(problem=str(p), repeat=layer.repeat, kind=kernel.kind,
                                gflops=p.flops / median / 1e9, rel_l2=errors["rel_l2"],
                                bound_ratio=errors["bound_ratio"])
    assert errors["rel_l2"] < 1e-4, f"{algo} {p}: rel_l2 {errors['rel_l2']:.2e}"
