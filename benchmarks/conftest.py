"""pytest-benchmark over the registry and the suites.

    pytest benchmarks/ --benchmark-only [--suite resnet50] [--batch 1] [--algo im2col,onednn]
    pytest benchmarks/ --benchmark-only --benchmark-json out.json
    pytest benchmarks/ --benchmark-only --benchmark-compare
    pytest benchmarks/ --benchmark-only --direction fwd,bwd_d,bwd_w   # every direction
"""

import pytest

from convbench.problem.suites import load_suite
from convbench.registry import kernels


def pytest_addoption(parser):
    group = parser.getgroup("convbench")
    group.addoption("--suite", default="resnet50", help="suite name or file (default resnet50)")
    group.addoption("--batch", type=int, default=1, help="batch size (default 1)")
    group.addoption("--algo", default="all", help="comma list of kernels/baselines, or all")
    group.addoption("--direction", default="fwd",
                    help="comma list of directions: fwd, bwd_d, bwd_w, bwd_wb (default fwd)")


def pytest_generate_tests(metafunc):
    if {"layer", "algo"} <= set(metafunc.fixturenames):
        config = metafunc.config
        layers = load_suite(config.getoption("--suite"), batch=config.getoption("--batch"))
        spec = config.getoption("--algo")
        names = ([k.name for k in kernels("cpu")] if spec == "all"
                 else [s.strip() for s in spec.split(",")])
        metafunc.parametrize("layer", layers, ids=[x.problem.name for x in layers])
        metafunc.parametrize("algo", names)
        if "direction" in metafunc.fixturenames:
            from convbench.problem import normalize_direction  # noqa: PLC0415

            directions = list(dict.fromkeys(normalize_direction(d) for d in
                                            config.getoption("--direction").split(",") if d))
            metafunc.parametrize("direction", directions)


@pytest.fixture(autouse=True)
def _group_by_layer(request):
    """Group the benchmark table by layer, so kernels of one layer sit together."""
    if "benchmark" in request.fixturenames and "layer" in request.fixturenames:
        bench = request.getfixturevalue("benchmark")
        bench.group = request.getfixturevalue("layer").problem.name
        if "direction" in request.fixturenames:
            bench.group += f" {request.getfixturevalue('direction')}"
