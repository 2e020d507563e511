"""What the Numba CPU kernels share: the workspace cap, tiling, bias, threads.

Every kernel processes large problems in tiles so that the memory it
allocates beyond input and output stays under :data:`WORKSPACE_CAP_BYTES`
(it reports the exact figure through ``workspace_bytes``). The cap is a
per-kernel attribute, so a user can trade memory for speed.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from convbench.numba_threads import use_preferred_layer
from convbench.problem import ConvProblem
from kernels.tiling import Tile, iter_tiles, plan_tiles  # noqa: F401 -- re-exported

# Pick Numba's threading layer before any parallel kernel starts the pool
# (why: convbench/numba_threads.py).
use_preferred_layer()

#: Default upper bound on a kernel's workspace (lowered matrices, transformed
#: tiles, spectra). 256 MiB keeps VGG-16 conv1_2 at batch 32 well inside a
#: 24 GiB machine while leaving tiles large enough for efficient GEMMs.
WORKSPACE_CAP_BYTES = 256 * 2**20

CPU_DTYPES = ("float32", "float64")


def cpu_dtype_reason(p: ConvProblem) -> str | None:
    """Reason a CPU kernel cannot run ``p``'s dtype, or ``None``."""
    if p.dtype not in CPU_DTYPES:
        return f"CPU kernels run float32 and float64, got {p.dtype} (float16 is GPU-only)"
    return None


def num_threads() -> int:
    """Threads the kernels use: Numba's setting, which the harness pins."""
    return numba.get_num_threads()


@njit(parallel=True, cache=True)
def add_bias(y: np.ndarray, bias: np.ndarray) -> None:
    """``y[n, k] += bias[k]`` in place, parallel over (n, k)."""
    n_images, channels = y.shape[0], y.shape[1]
    plane = y.shape[2] * y.shape[3]
    flat = y.reshape(n_images * channels, plane)
    for nk in prange(n_images * channels):
        b = bias[nk % channels]
        for i in range(plane):
            flat[nk, i] += b


def empty_output(p: ConvProblem) -> np.ndarray:
    """The output buffer a prepared kernel writes into and returns."""
    return np.empty(p.output_shape, dtype=p.dtype)
