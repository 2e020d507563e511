"""The CUDA sources of the GPU kernels: assembly, kernel names, nvcc builds.

Each kernel's ``.cu`` file is completed by ``common.cuh`` and by the
``#define`` lines its Python module owns (tile geometry), so the text that
CuPy compiles for a GPU, the text nvcc compiles in the tests and the text the
host emulator builds are one and the same. The module imports without CuPy
and without a GPU.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

CUDA_DIR = Path(__file__).with_name("cuda")

#: Kernel source name -> extern "C" kernels it defines (one per storage dtype).
DTYPE_SUFFIX = {"float32": "f32", "float64": "f64", "float16": "f16"}
KERNELS = {
    "direct": ("direct_conv2d",),
    "im2col": ("im2col_lower", "add_bias"),
    "winograd": ("winograd_input", "winograd_output"),
    "fft": ("fft_gather_tiles", "fft_scatter_outputs"),
}
#: Compile-time constants owned by the Python side (see kernels/gpu/direct.py).
DEFINES: dict[str, dict[str, int]] = {
    "direct": {"DIRECT_TILE_P": 8, "DIRECT_TILE_Q": 16, "DIRECT_K_BLOCK": 8},
}
#: Kernels that call __syncthreads (the emulator runs them one OS thread per CUDA thread).
SYNCHRONIZING = {"direct_conv2d"}


def kernel_name(base: str, dtype: str) -> str:
    """extern "C" name of ``base`` for storage ``dtype``, e.g. ``direct_conv2d_f32``."""
    return f"{base}_{DTYPE_SUFFIX[dtype]}"


def all_kernel_names(source: str) -> list[str]:
    """Every extern "C" kernel ``source`` defines."""
    return [f"{base}_{sfx}" for base in KERNELS[source] for sfx in DTYPE_SUFFIX.values()]


def cuda_source(source: str) -> str:
    """The complete CUDA text of ``source`` ("direct", "im2col", "winograd", "fft")."""
    if source not in KERNELS:
        raise ValueError(f"unknown CUDA source {source!r}; known: {', '.join(KERNELS)}")
    defines = "".join(f"#define {k} {v}\n" for k, v in DEFINES.get(source, {}).items())
    return (f"// convbench CUDA source {source!r}, assembled by kernels/gpu/sources.py\n"
            + defines + (CUDA_DIR / "common.cuh").read_text()
            + (CUDA_DIR / f"{source}.cu").read_text())


def emulator_source(source: str) -> str:
    """``cuda_source(source)`` wrapped in the host shim and launcher (C++20 for g++)."""
    return ((CUDA_DIR / "host_shim.h").read_text() + cuda_source(source)
            + (CUDA_DIR / "host_launch.cpp").read_text())


def source_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_nvcc() -> str | None:
    """Path of nvcc, or ``None``."""
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in ("/usr/local/cuda/bin/nvcc",):
        if Path(candidate).exists():
            return candidate
    return None


def nvcc_cubin(source: str, arch: str = "90", extra: tuple[str, ...] = ()) -> bytes:
    """Compile ``source`` with nvcc for ``sm_<arch>`` and return the cubin.

    Raises
    ------
    FileNotFoundError
        If nvcc is not installed.
    RuntimeError
        If compilation fails; the message carries nvcc's diagnostics.
    """
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found on PATH (install the CUDA toolkit)")
    with tempfile.TemporaryDirectory(prefix="convbench-nvcc-") as tmp:
        src = Path(tmp) / f"{source}.cu"
        out = Path(tmp) / f"{source}.cubin"
        src.write_text(cuda_source(source))
        cmd = [nvcc, "-cubin", f"-arch=sm_{arch}", "-std=c++17", "-Werror=all-warnings",
               *extra, "-o", str(out), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"nvcc failed on {source}.cu ({' '.join(cmd)}):\n"
                               f"{done.stdout}{done.stderr}")
        return out.read_bytes()
