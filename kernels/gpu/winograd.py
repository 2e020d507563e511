"""Winograd F(2x2,3x3) on the GPU: CUDA transforms + one batched cuBLAS GEMM.

``U = G g G^T`` is computed once per weight tensor in ``prepare`` (on the host,
in float64, rounded once: the CPU kernel's :func:`filter_transform`). Per
block of tiles, ``winograd_input`` writes ``V (16, C, T)``, one batched GEMM
``U (16, G, K/g, C/g) @ V (16, G, C/g, T)`` writes ``M (16, K, T)``, and
``winograd_output`` applies ``A^T M A`` + bias. Layouts, tiling rule and
arithmetic are the CPU kernel's; float16 data is transformed and multiplied
in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convbench.problem import ConvProblem
from kernels.cpu.winograd import FILTER, TILE_IN, TILE_OUT, WinogradKernel, filter_transform
from kernels.gpu.common import WORK_DTYPE, GpuKernel
from kernels.gpu.runtime import elementwise_grid
from kernels.tiling import plan_tiles


class GpuWinogradKernel(GpuKernel):
    """Winograd F(2x2,3x3): 3x3 filters, stride 1, dilation 1; any padding and groups."""

    name = "winograd"
    pretransforms_weights = True

    def problem_reason(self, p: ConvProblem) -> str | None:
        return super().problem_reason(p) or WinogradKernel.supports_geometry(p)

    def math_mode(self, p: ConvProblem) -> str:
        if p.dtype == "float16":
            return "fp16 storage, transforms and GEMMs in fp32"
        return super().math_mode(p)

    @staticmethod
    def _work_itemsize(p: ConvProblem) -> int:
        return np.dtype(WORK_DTYPE[p.dtype]).itemsize

    def plan(self, p: ConvProblem) -> tuple[int, int, int]:
        """(images, tile rows, tile columns) per block of tiles."""
        tile_rows, tile_cols = -(-p.oh // TILE_OUT), -(-p.ow // TILE_OUT)
        isz = self._work_itemsize(p)
        filter_bytes = TILE_IN * TILE_IN * p.oc * (p.ic // p.g) * isz
        per_tile_row = 16 * (p.ic + p.oc) * tile_cols * isz
        nb, rows = plan_tiles(p.mb, tile_rows, per_tile_row, self.workspace_cap - filter_bytes)
        return nb, rows, tile_cols

    def workspace_bytes(self, p: ConvProblem) -> int:
        nb, rows, cols = self.plan(p)
        isz = self._work_itemsize(p)
        return (16 * (p.ic + p.oc) * nb * rows * cols
                + TILE_IN * TILE_IN * p.oc * (p.ic // p.g)) * isz

    def prepare(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[[], Any]:
        self._check(p)
        rt = self.runtime
        xp = rt.xp
        work = WORK_DTYPE[p.dtype]
        w_host = w.get() if hasattr(w, "get") else np.asarray(w)
        u = rt.asarray(filter_transform(w_host.astype(work), p.g))
        xd, _, bd, y, has_bias = self.device_operands(p, x, None, bias)
        g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
        nb, rows, cols = self.plan(p)
        tile_rows = -(-p.oh // TILE_OUT)
        v_flat = xp.empty(16 * p.ic * nb * rows * cols, dtype=work)
        m_flat = xp.empty(16 * p.oc * nb * rows * cols, dtype=work)
        name_in = self.kernel("winograd_input", p)
        name_out = self.kernel("winograd_output", p)
        steps = []
        for n0 in range(0, p.mb, nb):
            count = min(nb, p.mb - n0)
            for tr0 in range(0, tile_rows, rows):
                n_rows = min(rows, tile_rows - tr0)
                tiles = count * n_rows * cols
                v = v_flat[:16 * p.ic * tiles].reshape(16, g, cg, tiles)
                m = m_flat[:16 * p.oc * tiles].reshape(16, g, kg, tiles)
                args_in = [xd, v, p.ic, p.ih, p.iw, n0, count, tr0, n_rows, cols, p.ph, p.pw]
                args_out = [m, bd, y, p.oc, p.oh, p.ow, n0, count, tr0, n_rows, cols,
                            int(has_bias)]
                steps.append((v, m, args_in, elementwise_grid(p.ic * tiles), args_out,
                              elementwise_grid(p.oc * tiles)))

        def run() -> Any:
            for v, m, args_in, grid_in, args_out, grid_out in steps:
                rt.launch("winograd", name_in, *grid_in, args_in)
                xp.matmul(u, v, out=m)
                rt.launch("winograd", name_out, *grid_out, args_out)
            return y

        return run


assert (TILE_OUT, FILTER) == (2, 3), "the CUDA transforms are written for F(2x2,3x3)"
KERNEL = GpuWinogradKernel()
KERNELS = [KERNEL]
