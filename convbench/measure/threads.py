"""Thread counts of every pool a measurement touches: Numba, BLAS/OpenMP, torch.

Numba's threading layer is chosen before its pool starts. Its default OpenMP
layer (libgomp) leaves its threads spin-waiting after every parallel region;
on a 2-core machine they starve OpenBLAS's threads in the GEMM that follows
(im2col on res2a_branch2b: 8.0 ms with omp, 2.1 ms with workqueue). The
workqueue layer sleeps between regions. The layer is fixed when the pool
first starts -- by the first parallel call *or* by ``numba.set_num_threads``
-- so every entry point calls :func:`use_preferred_layer` first. A user's
``NUMBA_THREADING_LAYER`` wins.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

PREFERRED_LAYER = "workqueue"


def use_preferred_layer() -> None:
    """Select :data:`PREFERRED_LAYER` unless the user chose a layer."""
    import numba  # noqa: PLC0415 -- heavy; only where compiled kernels run

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = PREFERRED_LAYER


def active_layer() -> str:
    """The layer in use, or the configured one if the pool has not started."""
    import numba  # noqa: PLC0415

    try:
        return numba.threading_layer()
    except ValueError:
        return str(numba.config.THREADING_LAYER)


def default_threads() -> int:
    """Threads a measurement uses when none are asked for: Numba's pool size (all cores)."""
    import numba  # noqa: PLC0415

    return int(numba.config.NUMBA_NUM_THREADS)


@contextlib.contextmanager
def pinned_threads(n: int | None) -> Iterator[dict[str, Any]]:
    """Fix Numba, BLAS/OpenMP and torch thread counts to ``n`` inside the block.

    ``None`` leaves the defaults (all cores). Yields what was set, for records.
    """
    import numba  # noqa: PLC0415
    from threadpoolctl import threadpool_info, threadpool_limits  # noqa: PLC0415

    use_preferred_layer()  # before set_num_threads starts Numba's pool
    if n is not None and n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    count = n or default_threads()
    old_numba = numba.get_num_threads()
    torch = sys.modules.get("torch")  # pinned only if a baseline already loaded it
    old_torch = torch.get_num_threads() if torch is not None else None
    numba.set_num_threads(min(count, default_threads()))
    if torch is not None:
        torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield {"threads": count, "numba_threads": numba.get_num_threads(),
                   "numba_threading_layer": active_layer(),
                   "blas": [{k: pool.get(k) for k in ("internal_api", "version",
                                                      "num_threads", "threading_layer")}
                            for pool in threadpool_info()],
                   "torch_threads": torch.get_num_threads() if torch is not None else None}
    finally:
        numba.set_num_threads(old_numba)
        if torch is not None:
            torch.set_num_threads(old_torch)
