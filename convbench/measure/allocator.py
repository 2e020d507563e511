"""The C heap during measurements: glibc's malloc told to keep the memory it frees.

glibc serves a block above ``M_MMAP_THRESHOLD`` (128 KiB when a process
starts, raised as large blocks are freed, up to 32 MiB) with fresh ``mmap``
pages, and gives the top of its heap back to the OS once more than
``M_TRIM_THRESHOLD`` of it is free. A call that allocates its output or its
temporaries (torch's convolution, SciPy's FFTs, NumPy temporaries) then
pays a page fault per 4 KiB touched in every call, or none, depending on what
the process allocated and freed before: oneDNN on ResNet-50's res2_branch2c at
batch 1 took 3.2 ms in a fresh process and 0.63 ms after an FFT kernel had
run in it. A framework that has run a few layers is in the second state.
Fixing both thresholds puts every measurement there, whatever ran before it
in the process, and makes the two independent of the order of kernels.

A user's ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` wins; other
C libraries than glibc are left alone (and said to be).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

#: glibc's largest admissible mmap threshold on 64-bit (``HEAP_MAX_SIZE / 2``).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the heap's top kept rather than given back to the OS.
TRIM_THRESHOLD = 1 << 30
M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_state: dict[str, Any] | None = None


def keep_freed_memory() -> dict[str, Any]:
    """Fix glibc's mmap and trim thresholds for this process (once; later calls are free).

    Returns
    -------
    dict
        What holds now, for the records: ``{"malloc": "glibc", "mmap_threshold":
        ..., "trim_threshold": ...}``, or ``{"malloc": ..., "left": reason}``
        where nothing was changed.
    """
    global _state
    if _state is None:
        _state = _set_thresholds()
    return dict(_state)


def _set_thresholds() -> dict[str, Any]:
    chosen = [name for name in USER_VARIABLES if name in os.environ]
    if chosen:
        return {"malloc": "glibc", "left": f"set by the user ({', '.join(chosen)})",
                **{name: os.environ[name] for name in chosen}}
    if not sys.platform.startswith("linux"):
        return {"malloc": sys.platform, "left": "not glibc"}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        version = libc.gnu_get_libc_version().decode()
    except (OSError, AttributeError):
        return {"malloc": "unknown", "left": "no glibc mallopt in this C library"}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or \
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return {"malloc": f"glibc {version}", "left": "mallopt refused the thresholds"}
    return {"malloc": f"glibc {version}", "mmap_threshold": MMAP_THRESHOLD,
            "trim_threshold": TRIM_THRESHOLD}
