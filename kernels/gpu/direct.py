"""Direct convolution on the GPU: the CUDA kernels of ``cuda/direct.cu``.

One thread block per (output tile of TILE_P x TILE_Q pixels, block of output
channels, image); input halo and filters of a chunk of input channels are
staged in shared memory. Two variants:

* ``direct_conv2d_tiled`` (register tiling): TILE_Q x K_GROUPS threads, each
  computing TILE_P pixels x TILED_K/K_GROUPS channels from registers, 64
  output channels a block. Where there are more than 8 channels per group.
* ``direct_conv2d``: TILE_Q x TILE_P threads, one pixel x K_BLOCK channels
  each; few channels per group (depthwise), or filters whose tiled weights do
  not fit shared memory.

:func:`plan_direct` chooses and sizes the launch, kept in Python so that the
CPU-only tests check it on every suite layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convbench.problem import ConvProblem

from ..algorithms.direct import input_window
from . import backward
from .base import GpuKernel
from .sources import CudaSource

#: Output tile of one thread block (rows x columns) and output channels per thread
#: of the one-pixel-per-thread variant.
TILE_P = 8
TILE_Q = 16
K_BLOCK = 8
#: Output channels per block of the register-tiled variant, and the thread groups
#: they are split over (TILED_K / K_GROUPS = 8 channels x TILE_P pixels per thread).
TILED_K = 64
K_GROUPS = 8
#: Channels per group above which the register-tiled variant is used.
TILED_MIN_CHANNELS = 8
SOURCE = CudaSource("direct", ("direct_conv2d", "direct_conv2d_tiled"),
                    defines={"DIRECT_TILE_P": TILE_P, "DIRECT_TILE_Q": TILE_Q,
                             "DIRECT_K_BLOCK": K_BLOCK, "DIRECT_TILED_K": TILED_K,
                             "DIRECT_K_GROUPS": K_GROUPS},
                    synchronizing=frozenset({"direct_conv2d", "direct_conv2d_tiled"}))
#: Shared memory a block may use without opting in to more (all CUDA GPUs).
SHARED_LIMIT_BYTES = 48 * 1024
#: Preferred shared memory per block: small enough for several resident blocks per SM.
SHARED_TARGET_BYTES = 24 * 1024
#: CUDA's limit on gridDim.y and gridDim.z.
GRID_YZ_LIMIT = 65535


@dataclass(frozen=True)
class DirectLaunch:
    """Launch configuration of a direct kernel for one problem."""

    kernel: str  # base name: "direct_conv2d_tiled" or "direct_conv2d"
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    chunk: int  # input channels staged per round
    shared_bytes: int


def halo_shape(p: ConvProblem) -> tuple[int, int]:
    """Rows and columns of input one output tile reads."""
    return input_window(p, TILE_P, TILE_Q)


def _chunk(p: ConvProblem, per_channel: int, fixed: int) -> int:
    """Input channels staged per round: the smaller target first (more resident blocks)."""
    cg = p.ic // p.g
    return (min(cg, (SHARED_TARGET_BYTES - fixed) // per_channel)
            or min(cg, (SHARED_LIMIT_BYTES - fixed) // per_channel))


def shared_bytes(p: ConvProblem, kernel: str, chunk: int) -> int:
    """Shared memory of ``kernel`` staging ``chunk`` channels (halo padded to 16 bytes)."""
    acc_bytes = 8 if p.dtype == "float64" else 4
    hh, hw = halo_shape(p)
    if kernel == "direct_conv2d_tiled":
        return ((chunk * hh * hw + 3) // 4 * 4 + chunk * p.kh * p.kw * TILED_K) * acc_bytes
    return chunk * (hh * hw + p.kh * p.kw * K_BLOCK) * acc_bytes


def plan_direct(p: ConvProblem) -> DirectLaunch | str:
    """Launch configuration for ``p``, or the reason the kernel cannot run it."""
    kg = p.oc // p.g
    tiles = -(-p.oh // TILE_P) * -(-p.ow // TILE_Q)
    candidates = (["direct_conv2d_tiled"] if kg > TILED_MIN_CHANNELS else []) + ["direct_conv2d"]
    for kernel in candidates:
        per_channel = shared_bytes(p, kernel, 1)
        chunk = _chunk(p, per_channel, 16)
        if chunk < 1:
            continue
        k_per_block, block = ((TILED_K, (TILE_Q, K_GROUPS, 1)) if kernel.endswith("tiled")
                              else (K_BLOCK, (TILE_Q, TILE_P, 1)))
        grid = (tiles, p.g * -(-kg // k_per_block), p.mb)
        if grid[1] > GRID_YZ_LIMIT or grid[2] > GRID_YZ_LIMIT:
            return f"direct: grid {grid} exceeds CUDA's limit of {GRID_YZ_LIMIT} in y and z"
        return DirectLaunch(kernel, grid, block, chunk, shared_bytes(p, kernel, chunk))
    need = shared_bytes(p, candidates[-1], 1)
    return (f"direct: one input channel's halo and filters need {need} bytes of shared "
            f"memory, more than {SHARED_LIMIT_BYTES}")


class GpuDirectKernel(GpuKernel):
    """Direct convolution in CUDA C; every parameter combination.

    Every mode computes on the CUDA cores: float16 data is summed in float32,
    and ``fpmath="tf32"`` problems are computed in strict float32 (there is no
    GEMM to hand to the tensor cores).
    """

    name = "direct"
    family = "direct"
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    sources = (SOURCE, backward.SOURCE)
    #: The forward launch's limits (:func:`plan_direct`): CUDA's grid, shared memory.
    documented_refusals = (*GpuKernel.documented_refusals,
                           r"^direct: grid .* exceeds CUDA's limit of \d+ in y and z$",
                           r"^direct: one input channel's halo and filters need \d+ bytes of "
                           r"shared memory, more than \d+$")

    def precision(self, p: ConvProblem) -> dict[str, str]:
        acc = "float64" if p.dtype == "float64" else "float32"
        return {"storage": p.dtype, "accumulation": f"{acc} FMA (CUDA cores)",
                "output": f"rounded once to {p.dtype}"}

    def problem_reason(self, p: ConvProblem) -> str | None:
        reason = super().problem_reason(p)
        if reason is None and p.dir == "fwd":
            plan = plan_direct(p)
            reason = plan if isinstance(plan, str) else None
        return reason

    def workspace_bytes(self, p: ConvProblem) -> int:
        return backward.workspace_bytes(self, p) if p.dir != "fwd" else 0

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[..., Any]:
        if p.dir != "fwd":
            return backward.prepare_direct(self, p, x, w)
        plan = plan_direct(p)
        assert isinstance(plan, DirectLaunch)
        rt = self.runtime
        xd, wd, bd, y, has_bias = self.device_operands(p, x, w, bias)
        args = [wd, bd, y, p.ic, p.ih, p.iw, p.oc, p.kh, p.kw, p.oh, p.ow, p.sh, p.sw,
                p.ph, p.pw, p.dil_h, p.dil_w, p.g, int(has_bias), plan.chunk]
        name = self.kernel(plan.kernel, p)

        def run(x: Any = xd) -> Any:
            rt.launch(SOURCE, name, plan.grid, plan.block, [x, *args], plan.shared_bytes)
            return y

        return self.with_details(p, run, variant=plan.kernel, chunk=plan.chunk)


KERNELS = [GpuDirectKernel()]
