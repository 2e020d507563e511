"""The extra memory of a prepared call: Numba's heap and the resident set, prepare through one call.

``tracemalloc`` sees NumPy's arrays but not what Numba's runtime (NRT),
OpenBLAS or pocketfft allocate, so a kernel's workspace is measured two other
ways here:

* **NRT bytes**: Numba allocates its arrays through CPython's *raw* allocator
  (``PyMem_RawMalloc``; ``numba.core.runtime.nrt`` installs it). A hook on that
  domain, compiled with llvmlite so that it runs without the GIL in Numba's
  worker threads, adds up the live bytes (``malloc_usable_size`` of each block)
  and keeps their high-water mark with atomic operations. NRT's own statistics
  (``NUMBA_NRT_STATS=1``, :func:`nrt_live_allocations`) count allocations, not
  bytes; both are recorded. The raw domain also serves CPython's large
  objects, a few KiB during a call.
* **RSS growth**: the process's resident high-water mark (``VmHWM``, reset by
  writing 5 to ``/proc/self/clear_refs``; ``ru_maxrss`` where that is not
  permitted, which only holds for the first measurement of a process) less
  the resident set before ``prepare`` and the bytes of the call's own result.
  It sees everything: NumPy's and SciPy's temporaries, BLAS buffers, pages of
  the stacks of new threads. glibc is told (:data:`CHILD_ENVIRONMENT`) to give
  freed blocks of 64 KiB and more back at once, so that the mark follows what
  is live rather than what an earlier call left in the heap.

:func:`measure_prepared_call` measures one (kernel, problem): it first
prepares and calls the kernel once on the same layer at batch 1, so that
compiling Numba code (or loading it from the cache) and starting thread pools
fall outside the measurement, then forgets the timed choices that prepare
made (``forget``), and measures ``prepare`` and one call. Run it in a fresh process whose
environment has :data:`CHILD_ENVIRONMENT` from the start (Numba reads
``NUMBA_NRT_STATS`` when it is imported, glibc its variables when it starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The environment a measuring process needs from its start.
CHILD_ENVIRONMENT = {
    "NUMBA_NRT_STATS": "1",
    # Fixed thresholds: blocks of 64 KiB and more are mmap'ed and unmapped when freed
    # (no dynamic threshold that grows with freed blocks), and a free heap top is
    # trimmed at once, so that RSS tracks live memory.
    "MALLOC_MMAP_THRESHOLD_": str(64 * 1024),
    "MALLOC_TRIM_THRESHOLD_": "0",
}

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_PYMEM_DOMAIN_RAW = 0

# The hook on CPython's raw allocator: each function calls the allocator it
# replaced (kept in globals) and moves @live by the usable size of the block;
# @peak keeps the largest @live. Atomic, so that Numba's threads may allocate
# at once; no GIL is taken.
_HOOK_IR = r"""
@live = global i64 0
@peak = global i64 0
@ctx = global ptr null
@orig_malloc = global ptr null
@orig_calloc = global ptr null
@orig_realloc = global ptr null
@orig_free = global ptr null
declare i64 @malloc_usable_size(ptr)

define internal void @grow(i64 %n) {
  %old = atomicrmw add ptr @live, i64 %n monotonic
  %new = add i64 %old, %n
  %ignored = atomicrmw max ptr @peak, i64 %new monotonic
  ret void
}

define internal i64 @usable(ptr %p) {
  %none = icmp eq ptr %p, null
  br i1 %none, label %zero, label %some
zero:
  ret i64 0
some:
  %n = call i64 @malloc_usable_size(ptr %p)
  ret i64 %n
}

define ptr @counting_malloc(ptr %unused, i64 %size) {
  %f = load ptr, ptr @orig_malloc
  %c = load ptr, ptr @ctx
  %r = call ptr %f(ptr %c, i64 %size)
  %n = call i64 @usable(ptr %r)
  call void @grow(i64 %n)
  ret ptr %r
}

define ptr @counting_calloc(ptr %unused, i64 %count, i64 %size) {
  %f = load ptr, ptr @orig_calloc
  %c = load ptr, ptr @ctx
  %r = call ptr %f(ptr %c, i64 %count, i64 %size)
  %n = call i64 @usable(ptr %r)
  call void @grow(i64 %n)
  ret ptr %r
}

define ptr @counting_realloc(ptr %unused, ptr %p, i64 %size) {
  %before = call i64 @usable(ptr %p)
  %f = load ptr, ptr @orig_realloc
  %c = load ptr, ptr @ctx
  %r = call ptr %f(ptr %c, ptr %p, i64 %size)
  %failed = icmp eq ptr %r, null
  br i1 %failed, label %done, label %moved
done:
  ret ptr %r
moved:
  %after = call i64 @usable(ptr %r)
  %d = sub i64 %after, %before
  call void @grow(i64 %d)
  ret ptr %r
}

define void @counting_free(ptr %unused, ptr %p) {
  %n = call i64 @usable(ptr %p)
  %m = sub i64 0, %n
  %ignored = atomicrmw add ptr @live, i64 %m monotonic
  %f = load ptr, ptr @orig_free
  %c = load ptr, ptr @ctx
  call void %f(ptr %c, ptr %p)
  ret void
}
"""


class _Allocator(ctypes.Structure):
    """CPython's ``PyMemAllocatorEx``."""

    _fields_ = [("ctx", ctypes.c_void_p), ("malloc", ctypes.c_void_p),
                ("calloc", ctypes.c_void_p), ("realloc", ctypes.c_void_p),
                ("free", ctypes.c_void_p)]


class RawHeapCounter:
    """Live bytes of CPython's raw allocator, where Numba's runtime allocates, and their peak.

    Counts from :meth:`install` on; blocks allocated before and freed after
    lower the count (a measurement is a difference from its own start).
    """

    def __init__(self) -> None:
        self._keep: list[Any] = []
        self._live: ctypes.c_int64 | None = None
        self._peak: ctypes.c_int64 | None = None

    @property
    def installed(self) -> bool:
        return self._live is not None

    def install(self) -> None:
        """Put the counting hook on the raw domain (once; later calls do nothing).

        Raises
        ------
        RuntimeError
            Where the C library has no ``malloc_usable_size`` (not glibc) or
            ``PYTHONMALLOC`` puts debug hooks under the raw domain.
        """
        if self.installed:
            return
        if os.environ.get("PYTHONMALLOC", "").startswith(("debug", "malloc_debug")):
            raise RuntimeError("PYTHONMALLOC debug hooks: the raw allocator's blocks are not "
                               "the C library's")
        import llvmlite.binding as llvm  # noqa: PLC0415 -- numba's dependency, loaded late

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        try:
            usable = libc.malloc_usable_size
        except AttributeError:
            raise RuntimeError("this C library has no malloc_usable_size") from None
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.add_symbol("malloc_usable_size", ctypes.cast(usable, ctypes.c_void_p).value)
        module = llvm.parse_assembly(_HOOK_IR)
        module.verify()
        machine = llvm.Target.from_default_triple().create_target_machine()
        engine = llvm.create_mcjit_compiler(module, machine)
        engine.finalize_object()
        original = _Allocator()
        ctypes.pythonapi.PyMem_GetAllocator(_PYMEM_DOMAIN_RAW, ctypes.byref(original))
        address = engine.get_global_value_address
        for name, value in (("ctx", original.ctx), ("orig_malloc", original.malloc),
                            ("orig_calloc", original.calloc),
                            ("orig_realloc", original.realloc), ("orig_free", original.free)):
            ctypes.c_void_p.from_address(address(name)).value = value
        hook = _Allocator(None, *(engine.get_function_address(f"counting_{name}")
                                  for name in ("malloc", "calloc", "realloc", "free")))
        # The engine holds the compiled hook: it must outlive every allocation.
        self._keep += [engine, original, hook]
        ctypes.pythonapi.PyMem_SetAllocator(_PYMEM_DOMAIN_RAW, ctypes.byref(hook))
        self._live = ctypes.c_int64.from_address(address("live"))
        self._peak = ctypes.c_int64.from_address(address("peak"))

    def live(self) -> int:
        """Bytes live now (relative to :meth:`install`)."""
        return self._live.value if self._live is not None else 0

    def peak(self) -> int:
        """The largest :meth:`live` since the last :meth:`reset_peak`."""
        return self._peak.value if self._peak is not None else 0

    def reset_peak(self) -> int:
        """Start a new peak from the bytes live now; returns them."""
        now = self.live()
        if self._peak is not None:
            self._peak.value = now
        return now


#: The process's counter (a hook is installed once per process).
RAW_HEAP = RawHeapCounter()


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def resident_bytes() -> int | None:
    """The process's resident set now (``VmRSS``), or None off Linux."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def high_water_bytes() -> int:
    """The resident high-water mark: ``VmHWM``, else ``ru_maxrss`` (KiB on Linux)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def reset_high_water() -> bool:
    """Reset ``VmHWM`` to the resident set now; False where that is not permitted."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def can_reset_high_water() -> bool:
    """Whether this process may reset its high-water mark (children may, likewise)."""
    return reset_high_water()


def trim_heap() -> None:
    """Collect garbage and give glibc's free heap back to the OS (where it is glibc)."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def nrt_live_allocations() -> int | None:
    """Numba's live allocations (``alloc - free`` of NRT's statistics), or None when off."""
    try:
        from numba.core.runtime import rtsys  # noqa: PLC0415

        stats = rtsys.get_allocation_stats()
    except (RuntimeError, ImportError):
        return None
    return stats.alloc - stats.free


def result_bytes(p: Any) -> int:
    """Bytes of what a prepared call of ``p`` returns: ``y``, ``dx``, ``dw`` (and ``db``)."""
    shape = {"fwd": p.output_shape, "bwd_d": p.input_shape}.get(p.dir, p.weight_shape)
    count = 1
    for extent in shape:
        count *= extent
    if p.dir == "bwd_wb":
        count += p.oc
    return count * p.itemsize


def warm_gemms() -> None:
    """GEMMs of every dtype that reach into BLAS's packing buffers as far as a layer's do:
    one as deep and wide as a packed panel, and tall, thin ones (Winograd's and FFT's)."""
    import numpy as np  # noqa: PLC0415

    for dtype in (np.float32, np.float64, np.complex64, np.complex128):
        for m, k, n in ((512, 512, 8192), (40000, 64, 64), (40000, 64, 3)):
            np.matmul(np.ones((m, k), dtype=dtype), np.ones((k, n), dtype=dtype))


def warm_libraries(on_threads: Callable[[Callable[[], None]], None] | None = None) -> None:
    """Touch the buffers BLAS keeps for the process, so that no measurement pays for them.

    OpenBLAS packs GEMM operands into per-thread buffers it allocates once and
    touches as far as the largest GEMM of that shape so far reached: the first
    such GEMM of a process would otherwise grow the resident set by up to 7 MiB
    that no later call gives back or needs again. :func:`warm_gemms` here (a
    second or so on two cores), and on other threads that call BLAS themselves
    through ``on_threads(fn)`` (a kernel's own thread team); what a kernel's
    GEMMs reach beyond that is part of its libraries' allowance.
    """
    warm_gemms()
    if on_threads is not None:
        on_threads(warm_gemms)
    trim_heap()


def _prepare_and_call(kernel: Any, p: Any, inputs: tuple) -> Any:
    call = kernel.prepare(p, *inputs)
    out = call()
    return call, out


def measure_prepared_call(kernel: Any, p: Any, *, seed: int = 0, warm: bool = True,
                          hwm_resettable: bool = True,
                          forget: Callable[[], object] | None = None) -> dict[str, Any]:
    """The extra memory of ``kernel`` on ``p``, from ``prepare`` through one call.

    Parameters
    ----------
    kernel : Kernel
        A CPU kernel that supports ``p``.
    p : ConvProblem
    seed : int
        Seed of the random inputs.
    warm : bool
        Prepare and call the kernel on ``p`` at batch 1 first (compilation,
        thread pools, BLAS buffers), then forget the choices it timed.
    hwm_resettable : bool
        Whether ``VmHWM`` may be reset here; otherwise the process's mark
        counts from its start and only a first measurement is exact.
    forget : callable, optional
        Forgets the choices a ``prepare`` timed and kept (the CPU kernels'
        ``forget_choices``), called after the warm-up and at the end, so that
        the measured ``prepare`` times its candidates, with their buffers.

    Returns
    -------
    dict
        ``nrt_peak_bytes`` (the raw heap's peak above its level before
        ``prepare``), ``nrt_allocations`` (NRT's live allocations after the
        call, less before), ``rss_growth_bytes`` (the high-water mark above
        the resident set before ``prepare``, less the result's bytes),
        ``result_bytes``, ``input_bytes``, ``seconds`` and ``rss_mark``.
    """
    from convbench.measure.inputs import random_inputs  # noqa: PLC0415

    forget = forget or (lambda: None)

    RAW_HEAP.install()
    if warm:
        small = p.with_(mb=1)
        _prepare_and_call(kernel, small, random_inputs(small, seed))
        forget()
    inputs = random_inputs(p, seed)
    input_bytes = sum(a.nbytes for a in inputs if a is not None)
    trim_heap()
    allocations = nrt_live_allocations()
    reset = hwm_resettable and reset_high_water()
    base_rss = resident_bytes() or 0
    base_heap = RAW_HEAP.reset_peak()
    t0 = time.perf_counter()
    call, out = _prepare_and_call(kernel, p, inputs)
    seconds = time.perf_counter() - t0
    heap_peak = RAW_HEAP.peak() - base_heap
    mark = high_water_bytes()
    after = nrt_live_allocations()
    del call, out
    trim_heap()
    forget()
    return {
        "nrt_peak_bytes": int(heap_peak),
        "nrt_allocations": None if after is None or allocations is None else after - allocations,
        "rss_growth_bytes": int(mark - base_rss - result_bytes(p)),
        "result_bytes": result_bytes(p),
        "input_bytes": int(input_bytes),
        "seconds": round(seconds, 3),
        "rss_mark": "VmHWM reset" if reset else "ru_maxrss of the process",
    }
