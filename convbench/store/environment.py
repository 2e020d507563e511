"""Where and with what a run was measured: the environment and the platform fingerprint.

:func:`environment` is what every results file's header carries (CPU, BLAS,
versions, GPU). :func:`platform_fingerprint` is its part that decides a
kernel's *summation order*, and so its exact rounding errors: the CPU's
instruction set, the BLAS kernels OpenBLAS picked, the CPU Numba compiles
for, oneDNN's instruction set, the GPU and its libraries. Two machines with
the same fingerprint should reproduce each other's errors bit for bit;
accuracy baselines and tuned plans are only compared, or reused, on the
fingerprint they were made on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("convbench", "numpy", "numba", "llvmlite", "scipy", "threadpoolctl", "torch",
             "cupy", "cupy-cuda12x", "cupy-cuda13x", "nvidia-cudnn-frontend",
             "nvidia-cudnn-cu12", "nvidia-cudnn-cu13")
#: Environment variables that change a platform's arithmetic (recorded in the fingerprint).
ARITHMETIC_VARIABLES = ("OPENBLAS_CORETYPE", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES",
                        "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def package_version(package: str) -> str | None:
    """Installed version of ``package``, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or the platform module."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The widest x86 vector extension this CPU has: ``avx512``, ``avx2``, ``avx`` or ``sse``."""
    from convbench.measure.platforms import cpu_flags  # noqa: PLC0415

    flags = cpu_flags()
    for isa, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx")):
        if flag in flags:
            return isa
    return "sse" if flags else platform.machine()


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def blas_pools(blas_only: bool = False) -> list[dict[str, Any]]:
    """The BLAS libraries (and, unless ``blas_only``, OpenMP runtimes) of this process.

    NumPy's and SciPy's BLAS are loaded first, so that what is listed does not
    depend on what the process happened to import before.
    """
    import numpy as np  # noqa: PLC0415 -- loads BLAS so threadpoolctl sees it
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    np.dot(np.ones((2, 2)), np.ones((2, 2)))
    try:
        import scipy.linalg  # noqa: PLC0415,F401 -- SciPy's own OpenBLAS, used by FFT's GEMMs
    except ImportError:
        pass
    return [{k: pool.get(k) for k in ("internal_api", "prefix", "version", "num_threads",
                                      "threading_layer", "architecture")}
            for pool in threadpool_info() if not blas_only or pool.get("user_api") == "blas"]


def environment(backend: str = "cpu") -> dict[str, Any]:
    """Where and with what a run was measured.

    CPU model and cores, BLAS libraries (threadpoolctl), versions of Python
    and the numeric stack, Numba's threading layer, the C heap's thresholds
    (which every measurement sets), and for ``backend="gpu"``
    the GPU, driver, CUDA and cuDNN versions where they can be read.
    """
    from convbench.measure.allocator import keep_freed_memory  # noqa: PLC0415
    from convbench.measure.threads import active_layer  # noqa: PLC0415 -- imports numba

    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "blas": blas_pools(),
        "versions": {pkg: v for pkg in _PACKAGES if (v := package_version(pkg)) is not None},
        "convbench_commit": _git_commit(),
        "numba_threading_layer": active_layer(),
        "allocator": keep_freed_memory(),
    }
    if "torch" in sys.modules or package_version("torch"):
        try:
            import torch  # noqa: PLC0415

            env["torch_onednn"] = bool(torch.backends.mkldnn.is_available())
        except ImportError:
            pass
    env["fingerprint"] = platform_fingerprint(backend)
    if backend == "gpu":
        env["gpu"] = gpu_environment()
    return env


def gpu_environment() -> dict[str, Any]:
    """GPU name, driver, CUDA runtime and cuDNN versions, or why they are unknown."""
    try:
        import cupy  # noqa: PLC0415
    except ImportError as exc:
        return {"available": False, "reason": f"cupy not importable: {exc}"}
    except Exception as exc:  # noqa: BLE001 -- a broken CuPy install is "no GPU" too
        return {"available": False, "reason": f"cupy failed to import: {exc}"}
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 -- any driver failure means no GPU here
        return {"available": False, "reason": f"no CUDA device: {exc}"}
    if count == 0:
        return {"available": False, "reason": "no CUDA device"}
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    info = {"available": True, "count": count,
            "name": name.decode() if isinstance(name, bytes) else name,
            "compute_capability": f"{props['major']}.{props['minor']}",
            "driver": cupy.cuda.runtime.driverGetVersion(),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cublas": _cublas_version(cupy)}
    try:
        from cupy.cuda import cudnn  # noqa: PLC0415

        info["cudnn"] = cudnn.getVersion()
    except Exception:  # noqa: BLE001 -- CuPy's own cuDNN binding is optional
        info["cudnn"] = _cudnn_frontend_backend_version()
    return info


def _cublas_version(cupy: Any) -> int | None:
    try:
        return int(cupy.cuda.cublas.getVersion(cupy.cuda.device.get_cublas_handle()))
    except Exception:  # noqa: BLE001 -- informational only
        return None


def _cudnn_frontend_backend_version() -> int | None:
    try:
        import cudnn  # noqa: PLC0415 -- the frontend reports the library it loaded

        return int(cudnn.backend_version())
    except Exception:  # noqa: BLE001 -- informational only
        return None


def _numba_cpu() -> str:
    """The CPU Numba compiles for: ``NUMBA_CPU_NAME``, else the host's."""
    chosen = os.environ.get("NUMBA_CPU_NAME")
    if chosen:
        return chosen
    try:
        import llvmlite.binding as llvm  # noqa: PLC0415

        return str(llvm.get_host_cpu_name())
    except Exception:  # noqa: BLE001 -- llvmlite missing: Numba is missing too
        return "unknown"


def _onednn_isa() -> str | None:
    """The instruction set torch dispatches its CPU kernels (oneDNN's) for, if torch is here."""
    if not package_version("torch"):
        return None
    try:
        import torch  # noqa: PLC0415

        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 -- an old or broken torch: say so, do not fail
        return "unknown"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return f"{capability} (max {cap})" if cap else capability


def platform_fingerprint(backend: str = "cpu") -> dict[str, Any]:
    """What decides this platform's summation orders, plus a short ``id`` over it.

    CPU: instruction set, OpenBLAS kernel set and version of each BLAS pool,
    Numba's target CPU, oneDNN's (torch's) instruction set, NumPy and SciPy
    versions (pocketfft, BLAS bindings), and the variables that override
    these. GPU: model, compute capability, CUDA runtime, cuBLAS, cuDNN and
    CuPy versions (``gpu`` is None where no GPU is usable), and SciPy's (the
    FFT kernel's filter spectra are computed on the host).
    """
    fp: dict[str, Any] = {"backend": backend}
    if backend == "gpu":
        gpu = gpu_environment()
        fp["gpu"] = ({k: gpu.get(k) for k in ("name", "compute_capability", "cuda_runtime",
                                              "cublas", "cudnn")}
                     if gpu.get("available") else None)
        fp["cupy"] = package_version("cupy-cuda13x") or package_version("cupy-cuda12x") \
            or package_version("cupy")
        fp["scipy"] = package_version("scipy")
    else:
        fp.update(cpu_isa=cpu_isa(),
                  blas=sorted({f"{p.get('internal_api')} {p.get('version')} "
                               f"{p.get('architecture')}" for p in blas_pools(blas_only=True)}),
                  numba_cpu=_numba_cpu(), onednn_isa=_onednn_isa(),
                  numpy=package_version("numpy"), scipy=package_version("scipy"),
                  overrides={k: os.environ[k] for k in ARITHMETIC_VARIABLES if k in os.environ})
    fp["id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict[str, Any]) -> str:
    """12 hex digits of a hash over a fingerprint's fields (``id`` excluded)."""
    body = json.dumps({k: v for k, v in fp.items() if k != "id"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:12]
