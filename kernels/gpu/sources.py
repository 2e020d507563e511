"""The CUDA sources of the GPU kernels: what each declares, assembly, nvcc builds.

A GPU kernel module declares its source as a :class:`CudaSource`: the file
in ``cuda/``, the ``extern "C"`` kernels it defines (one per storage dtype,
``NAME_f32``/``_f64``/``_f16``), the ``#define`` lines its Python side owns
(tile geometry), and which kernels call ``__syncthreads`` (the host emulator
runs those one OS thread per CUDA thread). :meth:`CudaSource.text` completes
the file with ``common.cuh`` and the defines, so the text that CuPy compiles
for a GPU, the text nvcc compiles in the tests and the text the host
emulator builds are one and the same. Nothing here imports CuPy.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CUDA_DIR = Path(__file__).with_name("cuda")

#: Suffix of the extern "C" kernel for each storage dtype.
DTYPE_SUFFIX = {"float32": "f32", "float64": "f64", "float16": "f16"}


@dataclass(frozen=True)
class CudaSource:
    """One ``cuda/<name>.cu`` file and what the Python side needs to know of it.

    Attributes
    ----------
    name : str
        File stem in ``kernels/gpu/cuda``.
    kernels : tuple of str
        Base names of the ``extern "C"`` kernels, each defined once per suffix
        of :data:`DTYPE_SUFFIX` (or of ``suffixes``).
    defines : mapping of str to int
        ``#define`` lines prepended to the text (constants owned by Python);
        kept as a tuple of pairs, so that a source can key a cache.
    synchronizing : frozenset of str
        Base names of the kernels that call ``__syncthreads``.
    suffixes : tuple of str
        The dtype suffixes the kernels are defined for.
    """

    name: str
    kernels: tuple[str, ...]
    defines: Mapping[str, int] | tuple[tuple[str, int], ...] = ()
    synchronizing: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = tuple(DTYPE_SUFFIX.values())

    def __post_init__(self) -> None:
        items = self.defines.items() if isinstance(self.defines, Mapping) else self.defines
        object.__setattr__(self, "defines", tuple((str(k), int(v)) for k, v in items))

    def path(self) -> Path:
        return CUDA_DIR / f"{self.name}.cu"

    def text(self) -> str:
        """The complete CUDA text: defines, ``common.cuh``, the file."""
        if not self.path().exists():
            raise ValueError(f"no CUDA source {self.path()}")
        defines = "".join(f"#define {k} {v}\n" for k, v in self.defines)
        return (f"// convbench CUDA source {self.name!r}\n" + defines
                + (CUDA_DIR / "common.cuh").read_text() + self.path().read_text())

    def emulator_text(self) -> str:
        """:meth:`text` wrapped in the host shim and launcher (C++20, for g++)."""
        return ((CUDA_DIR / "host_shim.h").read_text() + self.text()
                + (CUDA_DIR / "host_launch.cpp").read_text())

    def kernel_names(self) -> list[str]:
        """Every ``extern "C"`` kernel the file defines."""
        return [f"{base}_{sfx}" for base in self.kernels for sfx in self.suffixes]

    def synchronizes(self, kernel: str) -> bool:
        """Whether ``kernel`` (a full name, e.g. ``direct_conv2d_f32``) calls ``__syncthreads``."""
        return kernel.rsplit("_", 1)[0] in self.synchronizing


def kernel_name(base: str, dtype: str) -> str:
    """extern "C" name of ``base`` for storage ``dtype``, e.g. ``direct_conv2d_f32``."""
    return f"{base}_{DTYPE_SUFFIX[dtype]}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_nvcc() -> str | None:
    """Path of nvcc, or ``None``."""
    found = shutil.which("nvcc")
    if found:
        return found
    candidate = Path("/usr/local/cuda/bin/nvcc")
    return str(candidate) if candidate.exists() else None


def nvcc_cubin(source: CudaSource, arch: str = "90", extra: tuple[str, ...] = ()) -> bytes:
    """Compile ``source`` with nvcc for ``sm_<arch>`` and return the cubin.

    Raises
    ------
    FileNotFoundError
        If nvcc is not installed.
    RuntimeError
        If compilation fails; the message carries nvcc's diagnostics.
    """
    return nvcc_build(source, arch, extra)[0]


def nvcc_build(source: CudaSource, arch: str = "90",
               extra: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """:func:`nvcc_cubin`, also returning nvcc's diagnostics (``-Xptxas -v`` output)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found on PATH (install the CUDA toolkit)")
    with tempfile.TemporaryDirectory(prefix="convbench-nvcc-") as tmp:
        src = Path(tmp) / f"{source.name}.cu"
        out = Path(tmp) / f"{source.name}.cubin"
        src.write_text(source.text())
        cmd = [nvcc, "-cubin", f"-arch=sm_{arch}", "-std=c++17", "-Werror=all-warnings",
               *extra, "-o", str(out), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"nvcc failed on {source.name}.cu ({' '.join(cmd)}):\n"
                               f"{done.stdout}{done.stderr}")
        return out.read_bytes(), done.stdout + done.stderr
