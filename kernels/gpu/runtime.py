"""Where the GPU kernels run: CuPy on a CUDA device, or the host emulator.

A :class:`Runtime` is the little the GPU kernels need from an array library:
an array namespace (``xp``), kernel launches by name, batched GEMMs in an
explicit compute precision (:mod:`kernels.gpu.gemm`), batched real 2-D FFTs
whose spectra are stored frequency-major, and a synchronize.
:class:`CupyRuntime` is the real thing. :class:`HostRuntime` runs the same
CUDA sources on the CPU (compiled with g++ against ``cuda/host_shim.h``) with
NumPy arrays, so that CI, which has no GPU, runs the kernels' index maps,
tiling and host-side logic end to end, and emulates each GEMM precision in
NumPy. Emulation says nothing about speed.

Nothing here imports CuPy at module level: ``import kernels.gpu...`` works on
machines without CuPy, without a driver and without a GPU.

Whether a GPU is usable is decided here (:func:`cupy_unavailable_reason`); the
tests marked ``gpu`` skip with that reason where it is not (``tests/conftest.py``).
A device run must not pass by skipping: with ``CONVBENCH_REQUIRE_GPU=1`` in the
environment (:data:`REQUIRE_GPU_ENV`; ``benchmarks/device_job.sh`` sets it), a
missing or broken CuPy, driver, device or cuDNN (:func:`gpu_test_blockers`)
makes those tests fail with :func:`require_gpu_message` instead.
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

from .gemm import check_matmul, emulate_operand, matmul_layout
from .sources import CudaSource, digest

INSTALL_HINT = "CuPy is not installed: pip install 'convbench[gpu]' (cupy-cuda13x)"
CUDNN_INSTALL_HINT = ("the cuDNN frontend is not installed: pip install 'convbench[cudnn]' "
                      "(nvidia-cudnn-frontend 1.16 and nvidia-cudnn-cu13)")
#: Set to 1, the GPU tests fail where the GPU is unusable instead of skipping.
REQUIRE_GPU_ENV = "CONVBENCH_REQUIRE_GPU"

#: What the runtimes' ``unavailable_reason`` may say (regular expressions): the GPU
#: kernels and the cuDNN baselines document these refusals (see
#: :func:`convbench.contract.is_documented_refusal`; a missing CuPy is the contract's
#: "is not installed").
UNAVAILABLE_REFUSALS = (
    r"^CuPy failed to import: ",
    r"^no GPU present \(CUDA",
    r"^CUPY_TF32 is set: ",
    r"^the host emulator needs g\+\+",
)

#: Threads per block of the element-wise kernels (lowering, transforms, bias).
ELEMENTWISE_BLOCK = 256
#: Cap on blocks of grid-stride kernels: enough to fill any current GPU.
MAX_GRID_BLOCKS = 65535 * 8


def elementwise_grid(total: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) for a grid-stride kernel over ``total`` items."""
    blocks = max(1, min(MAX_GRID_BLOCKS, -(-total // ELEMENTWISE_BLOCK)))
    return (blocks, 1, 1), (ELEMENTWISE_BLOCK, 1, 1)


#: CUDA's limit on gridDim.y.
GRID_Y_LIMIT = 65535


def row_grid(n_rows: int, row_length: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of a kernel that loops over ``n_rows`` rows in y and their elements in x.

    One row per ``blockIdx.y`` (grid-stride beyond CUDA's 65535), so a thread
    decodes its row once and its element with 32-bit arithmetic.
    """
    blocks_x = max(1, min(MAX_GRID_BLOCKS, -(-row_length // ELEMENTWISE_BLOCK)))
    blocks_y = max(1, min(GRID_Y_LIMIT, n_rows))
    return (blocks_x, blocks_y, 1), (ELEMENTWISE_BLOCK, 1, 1)


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


@functools.lru_cache(maxsize=1)
def cudnn_unavailable_reason() -> str | None:
    """``None`` when the cuDNN frontend imports and loads the cuDNN library, else why not."""
    try:
        import cudnn  # noqa: PLC0415 -- optional dependency (nvidia-cudnn-frontend)
    except ImportError:
        return CUDNN_INSTALL_HINT
    except Exception as exc:  # noqa: BLE001 -- a broken install is "no cuDNN" too
        return f"the cuDNN frontend failed to import: {type(exc).__name__}: {exc}"
    try:
        # Asks libcudnn itself: a frontend that imports says nothing of the library.
        cudnn.backend_version()
    except Exception as exc:  # noqa: BLE001 -- a missing or mismatched library
        return f"the cuDNN library failed to load: {type(exc).__name__}: {exc}"
    return None


def gpu_required() -> bool:
    """Whether ``CONVBENCH_REQUIRE_GPU`` asks the GPU tests to fail rather than skip."""
    return os.environ.get(REQUIRE_GPU_ENV, "") not in ("", "0")


def gpu_test_blockers() -> list[str]:
    """What the GPU tests need and this machine lacks: CuPy, a driver and a device, cuDNN.

    Returns
    -------
    list of str
        One reason per missing piece; empty where everything is usable.
    """
    return [reason for reason in (cupy_unavailable_reason(), cudnn_unavailable_reason())
            if reason is not None]


def require_gpu_message(blockers: list[str]) -> str:
    """The one message a GPU test fails with under ``CONVBENCH_REQUIRE_GPU=1``."""
    return (f"{REQUIRE_GPU_ENV}=1 is set, so the GPU tests fail instead of skipping: "
            + "; ".join(blockers))


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


#: cudaDataType_t of each operand dtype (library_types.h).
CUDA_DATA_TYPE = {np.dtype(np.float16): 2, np.dtype(np.float32): 0, np.dtype(np.float64): 1,
                  np.dtype(np.complex64): 4, np.dtype(np.complex128): 5}
#: Scale type (alpha, beta) of each compute precision, real operands.
GEMM_SCALE = {"fp32": np.float32, "tf32": np.float32, "fp16": np.float32, "fp64": np.float64}


def spectrum_length(shape: tuple[int, int]) -> int:
    """Frequencies of a real 2-D FFT of ``shape``: ``L_h * (L_w // 2 + 1)``."""
    return shape[0] * (shape[1] // 2 + 1)


def _check_fft(real: Any, spectra: Any, direction: str) -> tuple[int, int, int]:
    """Validate a frequency-major real FFT's operands; return (batch, L_h, L_w)."""
    if real.ndim != 3 or spectra.ndim != 2:
        raise ValueError(f"{direction}: real tiles must be (batch, L_h, L_w) and spectra "
                         f"(frequencies, batch), got {real.shape} and {spectra.shape}")
    for name, arr in (("real tiles", real), ("spectra", spectra)):
        # cuFFT reads and writes raw pointers with the layout of the plan
        if not arr.flags.c_contiguous:
            raise ValueError(f"{direction}: {name} must be C-contiguous for cuFFT, strides "
                             f"{arr.strides}")
    batch, lh, lw = real.shape
    if spectra.shape != (spectrum_length((lh, lw)), batch):
        raise ValueError(f"{direction}: spectra of {real.shape} tiles are "
                         f"({spectrum_length((lh, lw))}, {batch}), got {spectra.shape}")
    expected = {np.dtype(np.float32): np.complex64, np.dtype(np.float64): np.complex128}
    if real.dtype not in expected or spectra.dtype != expected[real.dtype]:
        raise TypeError(f"{direction}: float32/complex64 or float64/complex128, got "
                        f"{real.dtype} and {spectra.dtype}")
    return batch, lh, lw


class CupyRuntime:
    """Kernels launched through CuPy (``RawModule``), cuBLAS GEMMs, cuFFT FFTs.

    Every GEMM names its compute precision (cuBLAS ``gemmStridedBatchedEx``
    with an explicit compute type), so strict float32 stays strict whatever
    else the process does; ``CUPY_TF32=1``, which would change CuPy's own
    GEMMs behind the caller's back, is refused by :meth:`unavailable_reason`.
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

    def matmul(self, a: Any, b: Any, out: Any, compute: str, accumulate: bool = False) -> None:
        """``out[i] = a[i] @ b[i]`` (row-major, 3-D) as one cuBLAS strided-batched GEMM.

        See :mod:`kernels.gpu.gemm` for ``compute``. Batch stride 0 broadcasts
        an operand (the weights of every image). ``accumulate`` adds the
        product to ``out`` (cuBLAS's beta = 1), in the compute precision,
        with one rounding to ``out``'s dtype.
        """
        from cupy.cuda import device  # noqa: PLC0415
        from cupy_backends.cuda.libs import cublas  # noqa: PLC0415

        batch, m, n, k = check_matmul(a, b, out, compute)
        computes = {"fp32": cublas.CUBLAS_COMPUTE_32F_PEDANTIC,
                    "tf32": cublas.CUBLAS_COMPUTE_32F_FAST_TF32,
                    "fp16": cublas.CUBLAS_COMPUTE_32F, "fp64": cublas.CUBLAS_COMPUTE_64F}
        scale = GEMM_SCALE[compute]
        if np.iscomplexobj(a):
            scale = np.complex64 if scale == np.float32 else np.complex128
        alpha = np.ones(1, scale)
        beta = np.ones(1, scale) if accumulate else np.zeros(1, scale)
        lda, sa = matmul_layout(a)
        ldb, sb = matmul_layout(b)
        ldc, sc = matmul_layout(out)
        handle = device.get_cublas_handle()
        mode = cublas.getPointerMode(handle)
        cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
        try:
            # Row-major out = a @ b is column-major out^T = b^T @ a^T: no transposes.
            cublas.gemmStridedBatchedEx(
                handle, cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_N, n, m, k, alpha.ctypes.data,
                b.data.ptr, CUDA_DATA_TYPE[b.dtype], ldb, sb,
                a.data.ptr, CUDA_DATA_TYPE[a.dtype], lda, sa,
                beta.ctypes.data, out.data.ptr, CUDA_DATA_TYPE[out.dtype], ldc, sc,
                batch, computes[compute], cublas.CUBLAS_GEMM_DEFAULT)
        finally:
            cublas.setPointerMode(handle, mode)

    def _fft_plan(self, kind: str, batch: int, shape: tuple[int, int], dtype: Any) -> Any:
        """A cached cuFFT plan: ``batch`` real 2-D transforms, spectra frequency-major."""
        key = (kind, batch, shape, np.dtype(dtype).str)
        plan = self._fft_plans.get(key)
        if plan is None:
            from cupy.cuda import cufft  # noqa: PLC0415

            lh, lw = shape
            half = [lh, lw // 2 + 1]
            double = np.dtype(dtype) == np.float64
            if kind == "forward":  # real (batch, lh, lw) -> complex (F, batch)
                fft_type = cufft.CUFFT_D2Z if double else cufft.CUFFT_R2C
                layout = ([lh, lw], 1, lh * lw, half, batch, 1)
            else:  # complex (F, batch) -> real (batch, lh, lw)
                fft_type = cufft.CUFFT_Z2D if double else cufft.CUFFT_C2R
                layout = (half, batch, 1, [lh, lw], 1, lh * lw)
            plan = cufft.PlanNd([lh, lw], *layout, fft_type, batch, "C", -1, None)
            self._fft_plans[key] = plan
        return plan

    def rfft2_by_frequency(self, tiles: Any, spectra: Any) -> None:
        """Real 2-D FFTs of ``tiles`` (batch, L_h, L_w) into ``spectra`` (F, batch).

        One cuFFT call with an advanced layout writes the spectra
        frequency-major, so that each frequency's (batch x channels) matrix is
        a contiguous GEMM operand without a transpose.
        """
        from cupy.cuda import cufft  # noqa: PLC0415

        batch, lh, lw = _check_fft(tiles, spectra, "rfft2")
        plan = self._fft_plan("forward", batch, (lh, lw), tiles.dtype)
        plan.fft(tiles, spectra, cufft.CUFFT_FORWARD)

    def irfft2_by_frequency(self, spectra: Any, tiles: Any) -> None:
        """Unnormalized inverse of :meth:`rfft2_by_frequency` (no ``1/(L_h L_w)``).

        cuFFT's multi-dimensional C2R overwrites its input: ``spectra`` is scratch.
        """
        from cupy.cuda import cufft  # noqa: PLC0415

        batch, lh, lw = _check_fft(tiles, spectra, "irfft2")
        plan = self._fft_plan("inverse", batch, (lh, lw), tiles.dtype)
        plan.fft(spectra, tiles, cufft.CUFFT_INVERSE)

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

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, compute: str,
               accumulate: bool = False) -> None:
        """``out[i] = a[i] @ b[i]`` (``+ out[i]``) with ``compute``'s rounding, in NumPy.

        Validated as :class:`CupyRuntime` validates; TF32 and float16 operands
        are emulated by :func:`kernels.gpu.gemm.emulate_operand`, sums are
        float32 (float64) BLAS sums, ``out`` is added in that precision where
        ``accumulate``, and the result is rounded once to its dtype.
        """
        check_matmul(a, b, out, compute)
        product = np.matmul(emulate_operand(a, compute), emulate_operand(b, compute))
        if accumulate:
            product = product + out.astype(product.dtype)
        out[...] = product.astype(out.dtype, copy=False)

    def rfft2_by_frequency(self, tiles: np.ndarray, spectra: np.ndarray) -> None:
        """:meth:`CupyRuntime.rfft2_by_frequency` with pocketfft (same layout checks)."""
        import scipy.fft  # noqa: PLC0415

        batch, _, _ = _check_fft(tiles, spectra, "rfft2")
        spectra[...] = scipy.fft.rfft2(tiles).reshape(batch, -1).T

    def irfft2_by_frequency(self, spectra: np.ndarray, tiles: np.ndarray) -> None:
        """:meth:`CupyRuntime.irfft2_by_frequency` with pocketfft (unnormalized)."""
        import scipy.fft  # noqa: PLC0415

        batch, lh, lw = _check_fft(tiles, spectra, "irfft2")
        spec = spectra.T.reshape(batch, lh, lw // 2 + 1)
        tiles[...] = scipy.fft.irfft2(spec, s=(lh, lw), norm="forward")
        spectra[...] = np.nan  # cuFFT's C2R leaves its input overwritten: no caller may reuse it

    def synchronize(self) -> None:
        pass


@functools.lru_cache(maxsize=1)
def default_runtime() -> CupyRuntime:
    """The runtime registered GPU kernels use."""
    return CupyRuntime()
