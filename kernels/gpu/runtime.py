"""Where the GPU kernels run: CuPy on a CUDA device, or the host emulator.

A :class:`Runtime` is the little the GPU kernels need from an array library:
an array namespace (``xp``), kernel launches by name, real FFTs and a
synchronize. :class:`CupyRuntime` is the real thing. :class:`HostRuntime`
runs the same CUDA sources on the CPU (compiled with g++ against
``cuda/host_shim.h``) with NumPy arrays, so that CI, which has no GPU, runs
the kernels' index maps, tiling and host-side logic end to end. Emulation
says nothing about speed.

Nothing here imports CuPy at module level: ``import kernels.gpu...`` works on
machines without CuPy, without a driver and without a GPU.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .sources import CudaSource, digest

INSTALL_HINT = "CuPy is not installed: pip install 'convbench[gpu]' (cupy-cuda13x)"

#: Threads per block of the element-wise kernels (lowering, transforms, bias).
ELEMENTWISE_BLOCK = 256
#: Cap on blocks of grid-stride kernels: enough to fill any current GPU.
MAX_GRID_BLOCKS = 65535 * 8


def elementwise_grid(total: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) for a grid-stride kernel over ``total`` items."""
    blocks = max(1, min(MAX_GRID_BLOCKS, -(-total // ELEMENTWISE_BLOCK)))
    return (blocks, 1, 1), (ELEMENTWISE_BLOCK, 1, 1)


class Int64(int):
    """A kernel argument passed as ``long long`` (plain ints are ``int``)."""


def _int32(value: int) -> int:
    if not -2**31 <= value < 2**31:
        raise OverflowError(f"kernel argument {value} does not fit a 32-bit int")
    return value


# ------------------------------------------------------------------ CuPy side
@functools.lru_cache(maxsize=1)
def cupy_unavailable_reason() -> str | None:
    """``None`` when CuPy and a CUDA device are usable, else why not."""
    try:
        import cupy  # noqa: PLC0415 -- optional dependency
    except ImportError:
        return INSTALL_HINT
    except Exception as exc:  # noqa: BLE001 -- a broken CuPy install is "no GPU" too
        return f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 -- no driver, no device: any CUDA error
        return f"no GPU present (CUDA: {exc})"
    if count == 0:
        return "no GPU present (CUDA reports 0 devices)"
    return None


def _cupy_argument(a: Any) -> Any:
    if isinstance(a, Int64):
        return np.int64(a)
    if isinstance(a, int | np.integer):
        return np.int32(_int32(int(a)))
    return a


def set_fp16_gemm_accumulation_fp32() -> str:
    """Make CuPy's float16 GEMMs accumulate in float32; return the compute type now set.

    CuPy's default for half is ``COMPUTE_TYPE_DEFAULT`` (cuBLAS's choice); this
    pins ``CUBLAS_COMPUTE_32F`` so "fp16 storage, fp32 accumulation" holds.
    """
    from cupy._core import _routines_linalg as linalg  # noqa: PLC0415 -- CuPy's own switch

    linalg.set_compute_type(np.float16, linalg.COMPUTE_TYPE_FP32)
    return linalg.compute_type_to_str(linalg.get_compute_type(np.dtype(np.float16)))


class CupyRuntime:
    """Kernels launched through CuPy (``RawModule``), cuBLAS GEMMs, cuFFT FFTs.

    Strict float32: CuPy lets cuBLAS use TF32 only when ``CUPY_TF32=1``, which
    :meth:`unavailable_reason` refuses; float16 GEMMs accumulate in float32
    (CuPy's compute type for half is set to FP32 explicitly).
    """

    name = "cupy"
    #: Work is queued on the current stream: timed with CUDA events.
    clock = "cuda-events"

    def __init__(self) -> None:
        self._modules: dict[str, Any] = {}
        self._fft_plans: dict[tuple[Any, ...], Any] = {}
        self._configured = False

    @property
    def xp(self) -> Any:
        import cupy  # noqa: PLC0415

        self._configure()
        return cupy

    def _configure(self) -> None:
        if self._configured:
            return
        self._configured = True
        set_fp16_gemm_accumulation_fp32()

    def unavailable_reason(self) -> str | None:
        reason = cupy_unavailable_reason()
        if reason is None and os.environ.get("CUPY_TF32", "0") not in ("", "0"):
            return ("CUPY_TF32 is set: cuBLAS would round float32 GEMM inputs to TF32; "
                    "unset it for strict float32")
        return reason

    def asarray(self, a: Any) -> Any:
        return self.xp.asarray(a)

    def launch(self, source: CudaSource, kernel: str, grid: tuple[int, int, int],
               block: tuple[int, int, int], args: list[Any], shared_mem: int = 0) -> None:
        cupy = self.xp
        module = self._modules.get(source.name)
        if module is None:
            module = cupy.RawModule(code=source.text(), options=("-std=c++17",))
            self._modules[source.name] = module
        fn = module.get_function(kernel)
        packed = tuple(_cupy_argument(a) for a in args)
        fn(grid, block, packed, shared_mem=shared_mem)

    def _plan(self, a: Any, kind: str, shape: tuple[int, int]) -> Any:
        """A cached cuFFT plan for a 2-D real transform over the last two axes."""
        key = (kind, a.shape, a.dtype.str, shape)
        plan = self._fft_plans.get(key)
        if plan is None:
            from cupyx.scipy import fft as cufft  # noqa: PLC0415

            plan = cufft.get_fft_plan(a, shape=shape, axes=(-2, -1), value_type=kind)
            self._fft_plans[key] = plan
        return plan

    def rfft2(self, a: Any) -> Any:
        from cupyx.scipy import fft as cufft  # noqa: PLC0415

        return cufft.rfft2(a, plan=self._plan(a, "R2C", a.shape[-2:]))

    def irfft2(self, a: Any, s: tuple[int, int]) -> Any:
        from cupyx.scipy import fft as cufft  # noqa: PLC0415

        return cufft.irfft2(a, s=s, plan=self._plan(a, "C2R", s))

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()


# --------------------------------------------------------------- host side
def _cache_dir() -> Path:
    base = os.environ.get("CONVBENCH_EMULATOR_CACHE")
    path = Path(base) if base else Path(tempfile.gettempdir()) / f"convbench-emulator-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def emulator_library(source: CudaSource) -> ctypes.CDLL:
    """Build (once per source text) and load the host emulation of ``source``."""
    text = source.emulator_text()
    lib = _cache_dir() / f"{source.name}-{digest(text)}.so"
    if not lib.exists():
        compiler = shutil.which("g++") or shutil.which("c++")
        if compiler is None:
            raise FileNotFoundError("the host emulator needs a C++20 compiler (g++)")
        with tempfile.TemporaryDirectory(prefix="convbench-emu-") as tmp:
            src = Path(tmp) / f"{source.name}.cpp"
            src.write_text(text)
            built = Path(tmp) / lib.name
            cmd = [compiler, "-std=c++20", "-O1", "-g0", "-fPIC", "-shared", "-pthread",
                   "-Wall", "-Wno-unused-function", "-o", str(built), str(src)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"building the host emulation of {source.name}.cu failed:\n"
                                   f"{done.stderr}")
            os.replace(built, lib)  # atomic: parallel test workers may race here
    dll = ctypes.CDLL(str(lib))
    dll.cb_launch.restype = ctypes.c_int
    dll.cb_launch.argtypes = [ctypes.c_char_p] + [ctypes.c_uint] * 6 + [
        ctypes.c_ulong, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
        ctypes.c_int]
    return dll


class HostRuntime:
    """The GPU kernels' CUDA sources run on the CPU, on NumPy arrays (for tests)."""

    name = "host-emulator"
    xp = np
    #: Emulated kernels run synchronously on the CPU.
    clock = "host"

    def unavailable_reason(self) -> str | None:
        if shutil.which("g++") is None and shutil.which("c++") is None:
            return "the host emulator needs g++ (C++20)"
        return None

    def asarray(self, a: Any) -> Any:
        return np.ascontiguousarray(a)

    def launch(self, source: CudaSource, kernel: str, grid: tuple[int, int, int],
               block: tuple[int, int, int], args: list[Any], shared_mem: int = 0) -> None:
        dll = emulator_library(source)
        keep: list[Any] = []
        pointers = []
        for a in args:
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError(f"{kernel}: array arguments must be C-contiguous")
                obj: Any = ctypes.c_void_p(a.ctypes.data)
            elif isinstance(a, Int64):
                obj = ctypes.c_longlong(a)
            elif isinstance(a, int | np.integer):
                obj = ctypes.c_int(_int32(int(a)))
            else:
                raise TypeError(f"{kernel}: unsupported kernel argument {type(a).__name__}")
            keep.append(obj)
            pointers.append(ctypes.cast(ctypes.pointer(obj), ctypes.c_void_p))
        argv = (ctypes.c_void_p * len(pointers))(*pointers)
        error = ctypes.create_string_buffer(512)
        status = dll.cb_launch(kernel.encode(), *grid, *block, shared_mem,
                               int(source.synchronizes(kernel)), argv, error, len(error))
        if status != 0:
            raise RuntimeError(f"emulated launch of {kernel} failed: {error.value.decode()}")

    def rfft2(self, a: np.ndarray) -> np.ndarray:
        import scipy.fft  # noqa: PLC0415

        return scipy.fft.rfft2(a)

    def irfft2(self, a: np.ndarray, s: tuple[int, int]) -> np.ndarray:
        import scipy.fft  # noqa: PLC0415

        return scipy.fft.irfft2(a, s=s)

    def synchronize(self) -> None:
        pass


@functools.lru_cache(maxsize=1)
def default_runtime() -> CupyRuntime:
    """The runtime registered GPU kernels use."""
    return CupyRuntime()
