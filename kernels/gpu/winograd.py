"""Winograd F(2x2,3x3) on the GPU: CUDA transforms + one strided-batched cuBLAS GEMM.

``U = G g G^T`` is computed once per weight tensor in ``prepare``, on the
device, in float64 and rounded once
(:func:`kernels.algorithms.winograd.filter_transform`). Per block of tiles,
``winograd_input`` writes ``V (16, C, T)``, one strided-batched GEMM
``U (16 G, K/g, C/g) @ V (16 G, C/g, T)`` writes ``M (16, K, T)``, and
``winograd_output`` applies ``A^T M A`` + bias. Layouts, tiling and transforms
are :mod:`kernels.algorithms.winograd`'s, operation for operation the CPU
kernel's.

Precision (:func:`stage_dtypes`): float32 and float64 keep ``U``, ``V`` and
``M`` in the data's dtype; the GEMM is strict, or TF32 on the tensor cores
in the ``tf32`` mode. float16 data is transformed in float32, ``V`` and ``U``
are stored in float16 (each rounded once: the tensor-core GEMM's operands,
at half the bytes of ``V``), ``M`` is the GEMM's float32 sums and the output
transform runs in float32. ``V`` holds sums of up to four inputs, so float16
inputs above 16376 in magnitude could overflow it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convbench.contract import FP16_UNIT_ROUNDOFF, ErrorModel
from convbench.problem import ConvProblem

from ..algorithms import winograd as algorithm
from ..algorithms import winograd_backward as backward_algorithm
from ..algorithms.winograd import FILTER, TILE_OUT, filter_transform
from . import backward
from .base import GpuKernel
from .gemm import GEMM_DESCRIPTION, gemm_compute
from .runtime import elementwise_grid
from .sources import CudaSource

SOURCE = CudaSource("winograd", ("winograd_input", "winograd_output"))


def stage_dtypes(p: ConvProblem) -> tuple[str, str]:
    """(dtype of ``U`` and ``V``, dtype of ``M``) for ``p``'s storage dtype."""
    if p.dtype == "float16":
        return "float16", "float32"
    return p.dtype, p.dtype


class GpuWinogradKernel(GpuKernel):
    """Winograd F(2x2,3x3): 3x3 filters, stride 1, dilation 1; any padding and groups."""

    name = "winograd"
    family = "winograd"
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    sources = (SOURCE, backward.SOURCE)
    caches_weights = True  # U = G g G^T, once per weight tensor
    documented_refusals = (*GpuKernel.documented_refusals, algorithm.GEOMETRY_REFUSAL)

    def problem_reason(self, p: ConvProblem) -> str | None:
        if p.dir != "fwd":
            return super().problem_reason(p) or backward_algorithm.supports_backward(p)
        return super().problem_reason(p) or algorithm.supports_geometry(p)

    uses_tf32 = True

    def error_model(self, p: ConvProblem) -> ErrorModel:
        """Winograd's family; U and V rounded to fp16 (float16 data) or TF32 (tf32 mode)."""
        if stage_dtypes(p)[0] == "float16":
            return ErrorModel(self.family, FP16_UNIT_ROUNDOFF)
        return super().error_model(p)

    def precision(self, p: ConvProblem) -> dict[str, str]:
        uv, m = stage_dtypes(p)
        transforms = "float32" if p.dtype == "float16" else p.dtype
        return {"storage": p.dtype, "filter_transform": f"float64, rounded once to {uv}",
                "input_transform": f"{transforms}, V stored as {uv}",
                "gemm": GEMM_DESCRIPTION[gemm_compute(p.math, uv)] + f", M stored as {m}",
                "output_transform": transforms}

    def math_note(self, p: ConvProblem) -> str:
        uv, _ = stage_dtypes(p)
        note = "GEMM " + GEMM_DESCRIPTION[gemm_compute(p.math, uv)]
        return note + (", U and V in fp16, transforms in fp32" if p.dtype == "float16" else "")

    def plan(self, p: ConvProblem) -> tuple[int, int, int]:
        """(images, tile rows, tile columns) per block of tiles."""
        return algorithm.plan_blocks(p, self.workspace_cap, self.work_itemsize(p))

    def workspace_bytes(self, p: ConvProblem) -> int:
        if p.dir != "fwd":
            return backward.workspace_bytes(self, p)
        return algorithm.workspace_bytes(p, self.plan(p), self.work_itemsize(p))

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[..., Any]:
        if p.dir != "fwd":
            uv = stage_dtypes(p)[0]
            return backward.prepare_winograd(self, p, x, w, SOURCE, stage_dtypes(p),
                                             gemm_compute(p.math, uv))
        rt = self.runtime
        xp = rt.xp
        uv, m_dtype = stage_dtypes(p)
        compute = gemm_compute(p.math, uv)
        u = filter_transform(rt.asarray(w).astype(uv), p.g, xp=xp)
        xd, _, bd, y, has_bias = self.device_operands(p, x, None, bias)
        g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
        nb, rows, cols = self.plan(p)
        tile_rows, _ = algorithm.tile_grid(p)
        v_flat = xp.empty(16 * p.ic * nb * rows * cols, dtype=uv)
        m_flat = xp.empty(16 * p.oc * nb * rows * cols, dtype=m_dtype)
        u_mat = u.reshape(16 * g, kg, cg)
        name_in = self.kernel("winograd_input", p)
        name_out = self.kernel("winograd_output", p)
        steps = []
        for n0 in range(0, p.mb, nb):
            count = min(nb, p.mb - n0)
            for tr0 in range(0, tile_rows, rows):
                n_rows = min(rows, tile_rows - tr0)
                tiles = count * n_rows * cols
                v = v_flat[:16 * p.ic * tiles].reshape(16 * g, cg, tiles)
                m = m_flat[:16 * p.oc * tiles].reshape(16 * g, kg, tiles)
                args_in = [v, p.ic, p.ih, p.iw, n0, count, tr0, n_rows, cols, p.ph, p.pw]
                args_out = [m, bd, y, p.oc, p.oh, p.ow, n0, count, tr0, n_rows, cols,
                            int(has_bias)]
                steps.append((v, m, args_in, elementwise_grid(p.ic * tiles), args_out,
                              elementwise_grid(p.oc * tiles)))

        def run(x: Any = xd) -> Any:
            for v, m, args_in, grid_in, args_out, grid_out in steps:
                rt.launch(SOURCE, name_in, *grid_in, [x, *args_in])
                rt.matmul(u_mat, v, m, compute)
                rt.launch(SOURCE, name_out, *grid_out, args_out)
            return y

        return self.with_details(p, run, blocks=len(steps))


assert (TILE_OUT, FILTER) == (2, 3), "the CUDA transforms are written for F(2x2,3x3)"
KERNELS = [GpuWinogradKernel()]
