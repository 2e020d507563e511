"""This machine's practical limits: fp32 GEMM throughput and memory bandwidth.

The roofline of a report is drawn from these numbers, measured on the same
machine as the run:

* **GEMM**: a large square float32 matrix product through every BLAS at hand
  (NumPy's ``matmul``, SciPy's ``sgemm``, torch's ``matmul`` when installed;
  cuBLAS through CuPy on a GPU); the roof is the best of them.
* **Bandwidth**: a STREAM triad ``a[i] = b[i] + s*c[i]`` over arrays far larger
  than the caches, in a parallel Numba loop; bytes counted as STREAM does
  (3 x 8 bytes per element in float64: two reads, one write). A NumPy copy is
  reported beside it.

Each is the best of a few runs of :func:`~convbench.measure.timing.bench`.

Results are cached per host (``$XDG_CACHE_HOME/convbench/roof-<host>.json``)
so that ``convbench run`` can attach them to each run's environment.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

from convbench.measure.clocks import Clock
from convbench.measure.timing import bench


def _best_of(fn: Callable[[], Any], repeats: int, clock: Clock | None = None) -> float:
    """Fastest of ``repeats`` timed runs after one untimed call."""
    return bench(fn, clock=clock, min_reps=repeats, min_time=0.0, warmup=0).min_s


def gemm_gflops(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n x n float32 GEMM through each available BLAS (best of repeats)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    flops = 2.0 * n**3
    out = {"numpy_matmul": flops / _best_of(lambda: np.matmul(a, b, out=c), repeats) / 1e9}
    try:
        from scipy.linalg import blas  # noqa: PLC0415

        # (B^T A^T) on the Fortran-ordered transposes is AB with no layout copies.
        out["scipy_sgemm"] = flops / _best_of(lambda: blas.sgemm(1.0, b.T, a.T),
                                              repeats) / 1e9
    except ImportError:
        pass
    try:
        import torch  # noqa: PLC0415

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch_matmul"] = flops / _best_of(lambda: torch.matmul(ta, tb), repeats) / 1e9
    except ImportError:
        pass
    return out


@njit(parallel=True, cache=True)
def stream_triad(a, b, c, scalar):
    """STREAM triad ``a = b + scalar * c``."""
    for i in prange(a.shape[0]):
        a[i] = b[i] + scalar * c[i]


def bandwidth_gbs(elements: int = 32 * 2**20, repeats: int = 5) -> dict[str, float]:
    """GB/s of the STREAM triad (Numba, parallel) and of a NumPy copy, float64."""
    a = np.zeros(elements)
    b = np.ones(elements)
    c = np.full(elements, 2.0)
    triad = 3 * 8 * elements / _best_of(lambda: stream_triad(a, b, c, 3.0), repeats) / 1e9
    copy = 2 * 8 * elements / _best_of(lambda: np.copyto(a, b), repeats) / 1e9
    return {"stream_triad": triad, "numpy_copy": copy}


#: CUDA C of the device bandwidth probes: one kernel each, so bytes are counted right.
_GPU_STREAM_SOURCE = r"""
extern "C" __global__ void stream_triad(float* a, const float* b, const float* c, float s,
                                        long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        a[i] = b[i] + s * c[i];
}
extern "C" __global__ void stream_copy(float* a, const float* b, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        a[i] = b[i];
}
"""

#: The GEMMs of the GPU roof: name -> (operand dtype, CuPy's cuBLAS compute type).
GPU_GEMMS = {"fp32": ("float32", "COMPUTE_TYPE_PEDANTIC"), "tf32": ("float32", "COMPUTE_TYPE_TF32"),
             "fp16_fp32acc": ("float16", "COMPUTE_TYPE_FP32")}


def gpu_roof(n: int = 8192, repeats: int = 5) -> dict[str, Any]:
    """cuBLAS GEMM TFLOP/s per math mode and device bandwidth, or why not.

    GEMMs: ``n^3`` ``cupy.matmul`` with CuPy's cuBLAS compute type set for the
    call and restored after it: strict fp32 (``PEDANTIC``: CUDA cores), TF32,
    and fp16 operands with fp32 accumulation (tensor cores): the roofs of the
    math modes. Bandwidth: a one-kernel STREAM triad ``a = b + s*c`` (three
    arrays of 256 Mi float32: 12 bytes per element) and a copy (8 bytes per
    element), each a single grid-stride kernel.
    """
    from convbench.measure.clocks import CudaEventClock  # noqa: PLC0415
    from convbench.store.environment import gpu_environment  # noqa: PLC0415

    info = gpu_environment()
    if not info.get("available"):
        return {"available": False, "reason": info.get("reason")}
    import cupy  # noqa: PLC0415
    from cupy._core import _routines_linalg as linalg  # noqa: PLC0415 -- CuPy's own switch

    clock = CudaEventClock()
    gemm = {}
    for name, (dtype, compute) in GPU_GEMMS.items():
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dtype)
        b = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dtype)
        before = linalg.get_compute_type(np.dtype(dtype))
        linalg.set_compute_type(np.dtype(dtype), getattr(linalg, compute))
        try:
            seconds = _best_of(lambda a=a, b=b: cupy.matmul(a, b), repeats, clock)
        finally:
            linalg.set_compute_type(np.dtype(dtype), before)
        gemm[name] = 2.0 * n**3 / seconds / 1e12
        del a, b
    module = cupy.RawModule(code=_GPU_STREAM_SOURCE)
    triad_fn, copy_fn = module.get_function("stream_triad"), module.get_function("stream_copy")
    size = 256 * 2**20
    x, y, z = (cupy.full(size, v, dtype=cupy.float32) for v in (0.0, 1.0, 2.0))
    blocks = (min(65535 * 8, -(-size // 256)),)
    count = np.int64(size)
    triad = 12 * size / _best_of(
        lambda: triad_fn(blocks, (256,), (x, y, z, np.float32(3.0), count)), repeats, clock) / 1e9
    copy = 8 * size / _best_of(lambda: copy_fn(blocks, (256,), (x, y, count)), repeats,
                               clock) / 1e9
    return {"available": True, "name": info.get("name"),
            "gemm_fp32_gflops": gemm["fp32"] * 1e3, "gemm_tflops": gemm,
            "bandwidth_gbs": triad, "stream_triad_gbs": triad, "copy_gbs": copy}


def measure_roof(threads: int | None = None, backend: str = "cpu") -> dict[str, Any]:
    """Measure the roof; ``peak_gflops`` and ``bandwidth_gbs`` are what plots draw."""
    from convbench.measure.threads import pinned_threads  # noqa: PLC0415

    with pinned_threads(threads) as pinned:
        gemm = gemm_gflops()
        bandwidth = bandwidth_gbs()
    roof = {"type": "roof", "host": socket.gethostname(), "backend": "cpu",
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": pinned["threads"],
            "gemm_gflops": gemm, "bandwidth": bandwidth,
            "peak_gflops": max(gemm.values()), "bandwidth_gbs": bandwidth["stream_triad"]}
    if backend == "gpu":
        roof["gpu"] = gpu_roof()
    return roof


def measure_and_cache(threads: int | None = None, backend: str = "cpu") -> dict[str, Any]:
    """:func:`measure_roof`, saved as this host's cached roof."""
    result = measure_roof(threads, backend)
    save_cached(result)
    return result


def cache_path(host: str | None = None) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "convbench" / f"roof-{host or socket.gethostname()}.json"


def save_cached(roof: dict[str, Any]) -> Path:
    path = cache_path(roof.get("host"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(roof, indent=1))
    return path


def load_cached(host: str | None = None) -> dict[str, Any] | None:
    """The roof measured on this host earlier, if any."""
    path = cache_path(host)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def roof_table(roof: dict[str, Any]) -> str:
    lines = ["| measurement | value |", "|---|---:|"]
    for name, value in roof["gemm_gflops"].items():
        lines.append(f"| fp32 GEMM 2048^3, {name} | {value:.1f} GFLOP/s |")
    for name, value in roof["bandwidth"].items():
        lines.append(f"| {name} (float64, 256 MiB arrays) | {value:.1f} GB/s |")
    lines.append(f"| **roof: peak** | **{roof['peak_gflops']:.1f} GFLOP/s** |")
    lines.append(f"| **roof: bandwidth** | **{roof['bandwidth_gbs']:.1f} GB/s** |")
    ridge = roof["peak_gflops"] / roof["bandwidth_gbs"]
    lines.append(f"| ridge point | {ridge:.1f} flop/byte |")
    gpu = roof.get("gpu")
    if gpu:
        lines.append(f"| GPU | {gpu if not gpu.get('available') else gpu['name']} |")
        for name, value in (gpu.get("gemm_tflops") or {}).items():
            lines.append(f"| GPU GEMM {name} (cuBLAS, 8192^3) | {value:.1f} TFLOP/s |")
        for key, label in (("stream_triad_gbs", "GPU STREAM triad, one kernel"),
                           ("copy_gbs", "GPU copy")):
            if key in gpu:
                lines.append(f"| {label} (float32, 1 GiB arrays) | {gpu[key]:.0f} GB/s |")
    return "\n".join(lines)
