"""Direct convolution on the GPU: the CUDA kernel of ``cuda/direct.cu``.

One thread block per (output tile of TILE_P x TILE_Q pixels, block of K_BLOCK
output channels, image); input halo and filters of a chunk of input channels
are staged in shared memory. :func:`plan_direct` is the launch arithmetic,
kept in Python so that the CPU-only tests check it on every suite layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convbench.problem import ConvProblem

from ..algorithms.direct import input_window
from .base import GpuKernel
from .sources import CudaSource

#: Output tile of one thread block (rows x columns) and output channels per thread.
TILE_P = 8
TILE_Q = 16
K_BLOCK = 8
SOURCE = CudaSource("direct", ("direct_conv2d",),
                    defines={"DIRECT_TILE_P": TILE_P, "DIRECT_TILE_Q": TILE_Q,
                             "DIRECT_K_BLOCK": K_BLOCK},
                    synchronizing=frozenset({"direct_conv2d"}))
#: Shared memory a block may use without opting in to more (all CUDA GPUs).
SHARED_LIMIT_BYTES = 48 * 1024
#: Preferred shared memory per block: small enough for several resident blocks per SM.
SHARED_TARGET_BYTES = 24 * 1024
#: CUDA's limit on gridDim.y and gridDim.z.
GRID_YZ_LIMIT = 65535


@dataclass(frozen=True)
class DirectLaunch:
    """Launch configuration of ``direct_conv2d`` for one problem."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    chunk: int  # input channels staged per round
    shared_bytes: int


def halo_shape(p: ConvProblem) -> tuple[int, int]:
    """Rows and columns of input one output tile reads."""
    return input_window(p, TILE_P, TILE_Q)


def plan_direct(p: ConvProblem) -> DirectLaunch | str:
    """Launch configuration for ``p``, or the reason the kernel cannot run it."""
    acc_bytes = 8 if p.dtype == "float64" else 4
    hh, hw = halo_shape(p)
    per_channel = (hh * hw + p.kh * p.kw * K_BLOCK) * acc_bytes
    cg, kg = p.ic // p.g, p.oc // p.g
    # Prefer the smaller target (more resident blocks); fall back to the hard limit.
    chunk = (min(cg, SHARED_TARGET_BYTES // per_channel)
             or min(cg, SHARED_LIMIT_BYTES // per_channel))
    if chunk < 1:
        return (f"direct: one input channel's halo and filters need {per_channel} bytes of "
                f"shared memory, more than {SHARED_LIMIT_BYTES}")
    tiles = -(-p.oh // TILE_P) * -(-p.ow // TILE_Q)
    grid = (tiles, p.g * -(-kg // K_BLOCK), p.mb)
    if grid[1] > GRID_YZ_LIMIT or grid[2] > GRID_YZ_LIMIT:
        return f"direct: grid {grid} exceeds CUDA's limit of {GRID_YZ_LIMIT} in y and z"
    return DirectLaunch(grid, (TILE_Q, TILE_P, 1), chunk, chunk * per_channel)


class GpuDirectKernel(GpuKernel):
    """Direct convolution in CUDA C; every parameter combination."""

    name = "direct"
    family = "direct"
    sources = (SOURCE,)

    def problem_reason(self, p: ConvProblem) -> str | None:
        reason = super().problem_reason(p)
        if reason is None:
            plan = plan_direct(p)
            reason = plan if isinstance(plan, str) else None
        return reason

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[[], Any]:
        plan = plan_direct(p)
        assert isinstance(plan, DirectLaunch)
        rt = self.runtime
        xd, wd, bd, y, has_bias = self.device_operands(p, x, w, bias)
        args = [xd, wd, bd, y, p.ic, p.ih, p.iw, p.oc, p.kh, p.kw, p.oh, p.ow, p.sh, p.sw,
                p.ph, p.pw, p.dil_h, p.dil_w, p.g, int(has_bias), plan.chunk]
        name = self.kernel("direct_conv2d", p)

        def run() -> Any:
            rt.launch(SOURCE, name, plan.grid, plan.block, args, plan.shared_bytes)
            return y

        return run


KERNELS = [GpuDirectKernel()]
