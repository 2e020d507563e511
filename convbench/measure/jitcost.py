"""What Numba's JIT costs the CPU kernels: compiling on a cold cache, loading on a warm one.

Every compiled function of ``convbench.kernels.cpu`` is declared with ``cache=True``, so
the machine code is written next to its source (or under ``NUMBA_CACHE_DIR``)
the first time it is compiled and loaded from there by every later process.
:func:`measure_in_fresh_process` runs each kernel once in a new interpreter
and returns, per kernel, the first call, a steady-state call and their
difference (compile or load time), with Numba's own cache counters: on a
warm cache ``cache_misses`` must be zero — the first call of a new process
loads, it does not recompile.

Run ``python -m convbench.measure.jitcost`` for the child side (JSON on stdout).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import time
from typing import Any

from convbench.measure.timing import Timing, bench
from convbench.problem import ConvProblem

#: The package of the compiled CPU kernels.
CPU_KERNEL_PACKAGE = "convbench.kernels.cpu"

#: One problem per compiled code path: dense 3x3 (direct's channel order, the
#: Winograd transforms, im2col's lowering, FFT's whole-image path), depthwise
#: (direct's row order), strided 1x1 and 7x7 (FFT's tiled path with stride),
#: 1x1 stride 1 (im2col's plain GEMM).
PROBLEMS = (
    'mb2ic32ih20oc32kh3ph1n"dense3x3"',
    'mb1ic16ih20oc16kh3ph1g16n"depthwise3x3"',
    'mb1ic32ih20oc64kh1sh2n"strided1x1"',
    'mb1ic32ih20oc64kh1n"plain1x1"',
    'mb1ic3ih64oc32kh7sh2ph3n"conv1_7x7"',
)
ALGORITHMS = ("direct", "im2col", "fft", "winograd")


def kernel_dispatchers() -> dict[str, Any]:
    """Every Numba-compiled function in the CPU kernel package, by qualified name."""
    from numba.core.dispatcher import Dispatcher  # noqa: PLC0415

    package = importlib.import_module(CPU_KERNEL_PACKAGE)
    found = {}
    for info in pkgutil.iter_modules(package.__path__, f"{CPU_KERNEL_PACKAGE}."):
        module = importlib.import_module(info.name)
        for attr, value in vars(module).items():
            if isinstance(value, Dispatcher) and value.__module__ == info.name:
                found[f"{info.name}.{attr}"] = value
    return found


def cache_counts() -> dict[str, dict[str, int]]:
    """Numba's cache hits and misses so far in this process, per dispatcher that was called."""
    counts = {}
    for name, dispatcher in kernel_dispatchers().items():
        stats = dispatcher.stats
        hits, misses = sum(stats.cache_hits.values()), sum(stats.cache_misses.values())
        if hits or misses:
            counts[name] = {"hits": hits, "misses": misses}
    return counts


#: Calls after the first whose median is the steady-state time.
STEADY_CALLS = 5


def _first_and_steady(fn: Any) -> Timing:
    """The first call (compile or cache load) and :data:`STEADY_CALLS` more, no warm-up."""
    return bench(fn, min_reps=STEADY_CALLS, min_time=0.0, warmup=0)


def numba_start_up() -> dict[str, Any]:
    """Time the process's first parallel Numba call, so that no kernel is charged for it.

    The first call of any compiled function in a process pays once for
    Numba's code generator and its threading layer (~0.4 s here, whichever
    kernel comes first). A tiny parallel STREAM triad takes that cost.
    """
    import numpy as np  # noqa: PLC0415

    from convbench.measure.roof import stream_triad  # noqa: PLC0415

    a, b = np.zeros(64), np.ones(64)
    timing = _first_and_steady(lambda: stream_triad(a, b, b, 1.0))
    return {"first_call_s": timing.first_call_s, "steady_call_s": timing.median_s,
            "jit_s": timing.first_call_s - timing.median_s, "problems": []}


def first_calls(algorithms: tuple[str, ...] = ALGORITHMS,
                problems: tuple[str, ...] = PROBLEMS) -> dict[str, Any]:
    """Per kernel, in this process: first and steady ``prepare`` + call, summed over problems.

    The steady one is the median of the :data:`STEADY_CALLS` after the first.
    """
    from convbench.measure.inputs import random_inputs  # noqa: PLC0415
    from convbench.registry import get_kernel  # noqa: PLC0415

    kernels_out = {"numba start-up": numba_start_up()}
    for name in algorithms:
        kernel = get_kernel(name)
        first = steady = 0.0
        ran = []
        for text in problems:
            p = ConvProblem.parse(text)
            if kernel.supports(p) is not None:
                continue
            inputs = random_inputs(p)

            def prepare_and_call(kernel=kernel, p=p, inputs=inputs):
                # prepare too: it may call compiled code (Winograd's filter transform).
                kernel.prepare(p, *inputs)()

            timing = _first_and_steady(prepare_and_call)
            first += timing.first_call_s
            steady += timing.median_s
            ran.append(p.name)
        kernels_out[name] = {"first_call_s": first, "steady_call_s": steady,
                             "jit_s": first - steady, "problems": ran}
    return {"kernels": kernels_out, "cache": cache_counts()}


def measure_in_fresh_process(cache_dir: str | None = None,
                             algorithms: tuple[str, ...] = ALGORITHMS,
                             timeout: float = 900) -> dict[str, Any]:
    """:func:`first_calls` in a new interpreter (``NUMBA_CACHE_DIR=cache_dir`` if given).

    Also reports the time to import the kernel modules (``import_s``) and the
    whole child process (``process_s``), so that the JIT share of a first run
    can be told from Python's own start-up.
    """
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "convbench.measure.jitcost", *algorithms],
                          capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"jitcost child failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout)
    result["process_s"] = wall
    return result


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    kernel_dispatchers()  # imports numba, NumPy, SciPy and every CPU kernel module
    import_s = time.perf_counter() - t0
    algorithms = tuple(argv if argv is not None else sys.argv[1:]) or ALGORITHMS
    result = first_calls(algorithms)
    result["import_s"] = import_s
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
