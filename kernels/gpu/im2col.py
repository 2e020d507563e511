"""im2col + GEMM on the GPU: a CUDA lowering kernel and cuBLAS strided-batched GEMMs.

The lowered layout and the tiling are :mod:`kernels.algorithms.im2col`'s:
``col`` viewed as ``(nb, G, C/g*R*S, rows*Q)``. Image ``b``'s output block
``y[b]`` (``K/g x rows*Q`` per group) is ``W_g @ col[b, g]``, so one
strided-batched GEMM over the images of a tile, with the weights broadcast
(batch stride 0), writes the NCHW output in place, row tiles included (the
output view's row stride is the image's ``P*Q``). Groups are a short loop
(over groups, or over images where there are fewer). A 1x1, stride-1,
unpadded convolution multiplies the input itself, with no lowering.

Precision: the lowered matrix is the input's dtype. float32 GEMMs are strict
(CUDA cores) or TF32 (tensor cores, problems with ``fpmath="tf32"``);
float16 GEMMs take fp16 operands on the tensor cores, sum in float32 and
round the output once to float16; float64 is float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convbench.problem import ConvProblem

from ..algorithms.im2col import is_pointwise_gemm, lowered_bytes, plan_lowering
from ..algorithms.tiling import iter_tiles
from . import backward
from .base import GpuKernel
from .gemm import GEMM_DESCRIPTION, gemm_compute
from .runtime import Int64, elementwise_grid, row_grid
from .sources import CudaSource

SOURCE = CudaSource("im2col", ("im2col_lower", "fill_bias"))


def grouped_matmul(rt: Any, w: Any, col: Any, out: Any, compute: str,
                   accumulate: bool = False) -> None:
    """``out[b, g] (+)= w[g] @ col[b, g]`` for (nb, G, ...) ``col``/``out`` and (G, ...) ``w``.

    One strided-batched GEMM per group over the images (weights broadcast),
    or per image over the groups, whichever makes fewer calls.
    """
    xp = rt.xp
    nb, groups = col.shape[0], col.shape[1]
    if groups == 1 or groups <= nb:
        for g in range(groups):
            rt.matmul(xp.broadcast_to(w[g], (nb, *w.shape[1:])), col[:, g], out[:, g], compute,
                      accumulate)
    else:
        for b in range(nb):
            rt.matmul(w, col[b], out[b], compute, accumulate)


class GpuIm2colKernel(GpuKernel):
    """im2col lowering in CUDA C + cuBLAS GEMM; every parameter combination."""

    name = "im2col"
    family = "direct"
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    sources = (SOURCE, backward.SOURCE)
    uses_tf32 = True

    def plan(self, p: ConvProblem) -> tuple[int, int]:
        """Images and output rows per tile."""
        return plan_lowering(p, self.workspace_cap)

    def workspace_bytes(self, p: ConvProblem) -> int:
        if p.dir != "fwd":
            return backward.workspace_bytes(self, p)
        if is_pointwise_gemm(p):
            return 0
        nb, rows = self.plan(p)
        return lowered_bytes(p, nb, rows)

    def precision(self, p: ConvProblem) -> dict[str, str]:
        compute = gemm_compute(p.math, p.dtype)
        stages = {"storage": p.dtype, "gemm": GEMM_DESCRIPTION[compute]}
        if not is_pointwise_gemm(p):
            stages = {"storage": p.dtype, "lowering": f"{p.dtype} (copies)", **stages}
        if p.dtype == "float16":
            stages["output"] = "fp32 sums rounded once to fp16"
        return stages

    def math_note(self, p: ConvProblem) -> str:
        return "GEMM " + GEMM_DESCRIPTION[gemm_compute(p.math, p.dtype)]

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[..., Any]:
        if p.dir != "fwd":
            return backward.prepare_im2col(self, p, x, w, SOURCE)
        rt = self.runtime
        xp = rt.xp
        compute = gemm_compute(p.math, p.dtype)
        xd, wd, bd, y, has_bias = self.device_operands(p, x, w, bias)
        g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
        crs_g = cg * p.kh * p.kw
        y_blocks = y.reshape(p.mb, g, kg, p.oh * p.ow)
        w_mat = wd.reshape(g, kg, crs_g)
        # The bias is written into y first and the GEMMs add to it (beta = 1): one
        # rounding of the sum, where adding it afterwards would round fp16 twice.
        bias_name = self.kernel("fill_bias", p)
        bias_grid = elementwise_grid(y.size)
        bias_args = [y, bd, Int64(y.size), p.oc, p.oh * p.ow]

        def start() -> None:
            if has_bias:
                rt.launch(SOURCE, bias_name, *bias_grid, bias_args)

        if is_pointwise_gemm(p):
            def run_pointwise(x: Any = xd) -> Any:
                start()
                grouped_matmul(rt, w_mat, x.reshape(p.mb, g, cg, p.ih * p.iw), y_blocks,
                               compute, has_bias)
                return y

            return self.with_details(p, run_pointwise, gemm_calls=g if g <= p.mb else p.mb)

        nb, rows = self.plan(p)
        crs = p.ic * p.kh * p.kw
        col_flat = xp.empty(nb * crs * rows * p.ow, dtype=p.dtype)
        lower = self.kernel("im2col_lower", p)
        steps = []
        for t in iter_tiles(p.mb, p.oh, nb, rows):
            size = t.nb * crs * t.rows * p.ow
            col = col_flat[:size].reshape(t.nb, g, crs_g, t.rows * p.ow)
            # The output block of the tile: a strided view of y (row stride P*Q).
            out = y_blocks[t.n0:t.n0 + t.nb, :, :, t.p0 * p.ow:(t.p0 + t.rows) * p.ow]
            args = [col, t.nb, p.ic, p.ih, p.iw, t.n0, t.p0, t.rows, p.kh, p.kw, p.sh,
                    p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.ow]
            steps.append((col, out, args, row_grid(t.nb * crs, t.rows * p.ow)))

        def run(x: Any = xd) -> Any:
            start()
            for col, out, args, launch in steps:
                rt.launch(SOURCE, lower, *launch, [x, *args])
                grouped_matmul(rt, w_mat, col, out, compute, has_bias)
            return y

        return self.with_details(p, run, tiles=len(steps))


KERNELS = [GpuIm2colKernel()]
