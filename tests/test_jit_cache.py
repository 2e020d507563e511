"""Compiled kernels are cached on disk: a new process loads them and does not recompile."""

import pytest

from convbench.measure.jitcost import ALGORITHMS, measure_in_fresh_process


def _misses(result):
    return {name: c["misses"] for name, c in result["cache"].items() if c["misses"]}


def test_a_new_process_loads_every_kernel_without_compiling():
    measure_in_fresh_process()  # fills the cache where this checkout has none yet
    warm = measure_in_fresh_process()
    assert _misses(warm) == {}
    called_modules = {name.rsplit(".", 1)[0] for name in warm["cache"]}
    assert {f"convbench.kernels.cpu.{a}" for a in ALGORITHMS} <= called_modules
    assert all(c["hits"] > 0 for c in warm["cache"].values())


@pytest.mark.slow
def test_an_empty_cache_compiles_then_loads(tmp_path):
    # The counters can tell a compile from a load: a fresh NUMBA_CACHE_DIR misses.
    cold = measure_in_fresh_process(str(tmp_path), algorithms=("im2col",))
    warm = measure_in_fresh_process(str(tmp_path), algorithms=("im2col",))
    assert _misses(cold) and not _misses(warm)
    assert warm["kernels"]["im2col"]["jit_s"] < cold["kernels"]["im2col"]["jit_s"]
