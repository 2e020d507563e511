"""im2col + GEMM on the GPU: a CUDA lowering kernel and cuBLAS (``xp.matmul``).

The lowered layout and the tiling are :mod:`kernels.algorithms.im2col`'s:
``col`` viewed as ``(nb, G, C/g*R*S, rows*Q)`` times the weights
``(G, K/g, C/g*R*S)`` is one batched GEMM whose output is the NCHW output
block. Tiles of images (or of output rows, when one image's lowered matrix
exceeds the workspace cap) bound the workspace; a 1x1, stride-1, unpadded
convolution is a plain GEMM with no lowering. float16 data is lowered as
float16 and multiplied with float32 accumulation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convbench.problem import ConvProblem

from ..algorithms.im2col import is_pointwise_gemm, lowered_bytes, plan_lowering
from ..algorithms.tiling import iter_tiles
from .base import GpuKernel
from .runtime import Int64, elementwise_grid
from .sources import CudaSource

SOURCE = CudaSource("im2col", ("im2col_lower", "add_bias"))


class GpuIm2colKernel(GpuKernel):
    """im2col lowering in CUDA C + cuBLAS GEMM; every parameter combination."""

    name = "im2col"
    family = "direct"
    sources = (SOURCE,)

    def plan(self, p: ConvProblem) -> tuple[int, int]:
        """Images and output rows per tile."""
        return plan_lowering(p, self.workspace_cap)

    def workspace_bytes(self, p: ConvProblem) -> int:
        if is_pointwise_gemm(p):
            return 0
        nb, rows = self.plan(p)
        col = lowered_bytes(p, nb, rows)
        # Row tiles multiply into a temporary before landing in the strided output.
        out = nb * p.oc * rows * p.ow * p.itemsize if rows < p.oh else 0
        return col + out

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[[], Any]:
        rt = self.runtime
        xp = rt.xp
        xd, wd, bd, y, has_bias = self.device_operands(p, x, w, bias)
        g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
        y_blocks = y.reshape(p.mb, g, kg, p.oh * p.ow)
        w_mat = wd.reshape(g, kg, cg * p.kh * p.kw)
        bias_name = self.kernel("add_bias", p)
        bias_grid = elementwise_grid(y.size)
        bias_args = [y, bd, Int64(y.size), p.oc, p.oh * p.ow]

        def finish() -> Any:
            if has_bias:
                rt.launch(SOURCE, bias_name, *bias_grid, bias_args)
            return y

        if is_pointwise_gemm(p):
            x_mat = xd.reshape(p.mb, g, cg, p.ih * p.iw)

            def run_pointwise() -> Any:
                xp.matmul(w_mat, x_mat, out=y_blocks)
                return finish()

            return run_pointwise

        nb, rows = self.plan(p)
        crs = p.ic * p.kh * p.kw
        col_flat = xp.empty(nb * crs * rows * p.ow, dtype=p.dtype)
        out_flat = xp.empty(nb * p.oc * rows * p.ow, dtype=p.dtype) if rows < p.oh else None
        lower = self.kernel("im2col_lower", p)
        steps = []
        for t in iter_tiles(p.mb, p.oh, nb, rows):
            size = t.nb * crs * t.rows * p.ow
            col = col_flat[:size].reshape(t.nb, g, crs // g, t.rows * p.ow)
            args = [xd, col, t.nb, p.ic, p.ih, p.iw, t.n0, t.p0, t.rows, p.kh, p.kw, p.sh,
                    p.sw, p.ph, p.pw, p.dil_h, p.dil_w, p.ow]
            steps.append((t, col, args, elementwise_grid(size)))

        def run() -> Any:
            for t, col, args, launch in steps:
                rt.launch(SOURCE, lower, *launch, args)
                if out_flat is None:  # whole images: the GEMM writes y directly
                    xp.matmul(w_mat, col, out=y_blocks[t.n0:t.n0 + t.nb])
                else:
                    tmp = out_flat[:t.nb * p.oc * t.rows * p.ow].reshape(
                        t.nb, g, kg, t.rows * p.ow)
                    xp.matmul(w_mat, col, out=tmp)
                    y_blocks[t.n0:t.n0 + t.nb, :, :, t.p0 * p.ow:(t.p0 + t.rows) * p.ow] = tmp
            return finish()

        return run


KERNELS = [GpuIm2colKernel()]
