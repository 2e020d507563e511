"""convbench's own kernels and baselines: every ``KERNELS`` list of the kernel packages.

Each kernel module ends with an explicit ``KERNELS = [...]``; adding a kernel
is adding its module. The harness registers :func:`builtin_kernels`, in the
order of :data:`LISTING_ORDER` (others after it, by name).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

#: Packages whose modules may define ``KERNELS``.
PACKAGES = ("cpu", "gpu", "baselines")
#: How ``convbench list`` and the tables order the built-ins.
LISTING_ORDER = ("direct", "im2col", "fft", "winograd", "winograd_4x4", "winograd_6x6", "onednn",
                 "onednn_best", "onednn_cl",
                 "numpy_im2col", "cudnn", "cudnn_best", "torch_cudnn")


def builtin_kernels() -> list[Any]:
    """Every kernel and baseline the kernel packages define, in listing order."""
    found = []
    for package in PACKAGES:
        pkg = importlib.import_module(f"{__package__}.{package}")
        for info in pkgutil.iter_modules(pkg.__path__):
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            found += getattr(module, "KERNELS", [])

    def rank(kernel: Any) -> tuple[int, str]:
        name = kernel.name
        return (LISTING_ORDER.index(name) if name in LISTING_ORDER else len(LISTING_ORDER), name)

    return sorted(found, key=rank)
