"""Choose Numba's threading layer before its thread pool starts.

Numba's default OpenMP layer (libgomp) leaves its threads spin-waiting after
every parallel region; on a 2-core machine they starve OpenBLAS's threads in
the GEMM that follows (im2col on res2a_branch2b: 8.0 ms with omp, 2.1 ms with
workqueue). The workqueue layer sleeps between regions. The layer is fixed
when the pool first starts -- by the first parallel call *or* by
``numba.set_num_threads`` -- so every entry point calls this first. A user's
``NUMBA_THREADING_LAYER`` wins.
"""

from __future__ import annotations

import os

import numba

PREFERRED_LAYER = "workqueue"


def use_preferred_layer() -> None:
    """Select :data:`PREFERRED_LAYER` unless the user chose a layer."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = PREFERRED_LAYER


def active_layer() -> str:
    """The layer in use, or the configured one if the pool has not started."""
    try:
        return numba.threading_layer()
    except ValueError:
        return str(numba.config.THREADING_LAYER)
