"""``convbench ab --count instructions``: callgrind's count of the timed calls, on one thread.

Time on a shared 2-core VM cannot resolve a few percent; an instruction count
can, since it is the same on every run. Each side's worker runs under
``valgrind --tool=callgrind --instr-atstart=no``: nothing is instrumented, let
alone counted, until a tiny C shim (:data:`SHIM_SOURCE`, compiled here with
``gcc`` and loaded by the worker with :mod:`ctypes`) issues callgrind's client
requests around the calls -- start instrumenting, zero the counters, the
calls, dump, stop instrumenting -- so Python's start, the imports, the JIT and
``prepare`` do not count (and run at Valgrind's uninstrumented speed).
Natively those requests are no-ops.

Instrumentation, not callgrind's collection toggle, brackets the calls: the
toggle is per thread, and a Numba kernel's parallel loop runs in the threads
of Numba's pool (one, here), not in the thread that calls it. Counts are the
sum over every thread of the process.

Both sides run with one thread and the same code paths (:func:`count_environment`):
``NUMBA_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1``, ``NUMBA_CPU_NAME`` an AVX2
target (``haswell`` by default; Valgrind has no AVX-512) with
``NUMBA_CPU_FEATURES`` empty (the target's own features, not this CPU's),
``OPENBLAS_CORETYPE=Haswell`` and ``PYTHONHASHSEED=0``. Two more settings make
the count repeatable: ``NUMBA_THREADING_LAYER=omp``, whose team of one runs a
parallel loop in the calling thread (the workqueue layer hands it to a pool
thread and waits, a hand-off whose cost varies from run to run); and a fixed
``MALLOC_MMAP_THRESHOLD_`` (:data:`MMAP_THRESHOLD`), so that every large array
sits on its own pages at the same offset in both processes, whatever each
allocated before (glibc's threshold otherwise moves, and with it the
alignment that decides how many iterations a vectorized loop peels).

What remains differs with the process's addresses: Python's dict probing and
small allocations. One tree against itself counts exactly alike; two
worktrees of one commit differ by tens to hundreds of instructions per call. Numba compiling under
Valgrind is slow, so each side first runs natively with that environment,
which fills the tree's Numba cache for that target and gives the outputs the
accuracy check needs; under Valgrind the kernels then load from the cache.

Instruction counts rank code, not algorithms: two kernels with different
memory traffic may count alike and run apart. They answer "did this kernel's
code get slower", on one thread.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from convbench.ab.thresholds import cache_dir

#: The AVX2 targets Valgrind runs everywhere (the Numba CPU name, OpenBLAS's core).
DEFAULT_CPU = "haswell"
OPENBLAS_CORES = {"haswell": "Haswell", "skylake": "Haswell", "broadwell": "Haswell",
                  "znver1": "Zen", "znver2": "Zen", "znver3": "Zen"}
#: What to run where Valgrind is missing (Debian's package, as ``make valgrind`` does).
INSTALL_HINT = "apt-get install valgrind (as root; or make valgrind)"
CALLGRIND_HEADER = Path("/usr/include/valgrind/callgrind.h")
#: Bytes from which glibc's malloc maps each block on its own pages (a fixed threshold).
MMAP_THRESHOLD = 16384

SHIM_SOURCE = r"""
#include <valgrind/callgrind.h>

int cb_on_valgrind(void) { return RUNNING_ON_VALGRIND; }

void cb_start(void) {
    CALLGRIND_START_INSTRUMENTATION;
    CALLGRIND_ZERO_STATS;
}

void cb_stop(const char *label) {
    CALLGRIND_DUMP_STATS_AT(label);
    CALLGRIND_STOP_INSTRUMENTATION;
}
"""


def missing_tools() -> str | None:
    """Why instructions cannot be counted here (Valgrind, its header or gcc missing), or None."""
    if shutil.which("valgrind") is None:
        return f"valgrind is not installed: {INSTALL_HINT}"
    if not CALLGRIND_HEADER.exists():
        return f"{CALLGRIND_HEADER} is missing: {INSTALL_HINT}"
    if shutil.which("gcc") is None:
        return "gcc is not installed (it compiles the callgrind shim): apt-get install gcc"
    return None


def build_shim(directory: Path | None = None) -> Path:
    """The shim's shared library, compiled once per source into the cache directory."""
    reason = missing_tools()
    if reason is not None:
        raise FileNotFoundError(reason)
    digest = hashlib.sha256(SHIM_SOURCE.encode()).hexdigest()[:12]
    directory = directory or cache_dir()
    library = directory / f"callgrind_shim-{digest}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"callgrind_shim-{digest}.c"
    source.write_text(SHIM_SOURCE)
    tmp = library.with_suffix(".tmp.so")
    result = subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(tmp), str(source)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"gcc could not compile the callgrind shim:\n{result.stderr}")
    tmp.replace(library)
    return library


def count_environment(cpu: str = DEFAULT_CPU) -> dict[str, str]:
    """The variables both sides count with (see the module docstring)."""
    if cpu not in OPENBLAS_CORES:
        raise ValueError(f"--cpu must be an AVX2 target Valgrind runs: one of "
                         f"{', '.join(OPENBLAS_CORES)}, got {cpu!r}")
    return {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "",
            "OPENBLAS_CORETYPE": OPENBLAS_CORES[cpu], "PYTHONHASHSEED": "0",
            "NUMBA_THREADING_LAYER": "omp", "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}


def valgrind_prefix(out_dir: Path) -> list[str]:
    """The command words that run a worker under callgrind, its files in ``out_dir``."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.%p",
            f"--log-file={out_dir}/valgrind.%p.log"]


def dump_prefix(out_dir: Path) -> str:
    """What the worker's dump files start with (``<prefix>.<pid>.<n>``)."""
    return f"{out_dir}/callgrind"
