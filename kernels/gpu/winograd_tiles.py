"""Winograd F(4x4,3x3) and F(6x6,3x3) on the GPU: CUDA transforms + one batched cuBLAS GEMM.

The pipeline of F(2x2,3x3) (:mod:`kernels.gpu.winograd`) for any tile and
point set: ``U = G g G^T`` once per weight tensor in ``prepare`` (on the
device, float64, rounded once), then per block of tiles
``winograd_tiles_input`` writes ``V (alpha^2, C, T)``, one strided-batched
GEMM ``U (alpha^2 G, K/g, C/g) @ V (alpha^2 G, C/g, T)`` writes
``M (alpha^2, K, T)`` and ``winograd_tiles_output`` applies ``A^T M A`` + bias.
The matrices are :func:`kernels.algorithms.winograd.cook_toom`'s, passed to
the CUDA kernels as small device arrays in the transforms' dtype.

Precision: float32 and float64 keep ``U``, ``V`` and ``M`` in the data's
dtype with a strict GEMM; float16 data is transformed, multiplied and
summed in float32 (strict) and only the output is stored in float16. Unlike
F(2x2,3x3) these tiles never use fp16 or TF32 operands: their transforms'
growth factors (tens of times F(2x2,3x3)'s) would put an fp16 or TF32 result
at 3-5e-3 rel_l2, beyond the 2e-3 that cuDNN's admissible plans deliver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convbench.contract import ErrorModel
from convbench.problem import ConvProblem

from ..algorithms import winograd as algorithm
from .base import GpuKernel
from .gemm import GEMM_DESCRIPTION, gemm_compute
from .runtime import elementwise_grid
from .sources import CudaSource

#: Largest input tile the CUDA transforms hold in registers (F(6x6,3x3): 8).
MAX_ALPHA = 8
SOURCE = CudaSource("winograd_tiles", ("winograd_tiles_input", "winograd_tiles_output"),
                    defines={"WINOGRAD_TILES_MAX_ALPHA": MAX_ALPHA})


def stage_dtype(p: ConvProblem) -> str:
    """dtype of ``U``, ``V`` and ``M`` for ``p``'s storage dtype (float32 for float16 data)."""
    return "float32" if p.dtype == "float16" else p.dtype


class GpuWinogradTileKernel(GpuKernel):
    """Winograd F(m x m, 3x3): 3x3 filters, stride 1, dilation 1; any padding and groups.

    Parameters
    ----------
    runtime, workspace_cap
        As :class:`~kernels.gpu.base.GpuKernel`.
    points : str, optional
        A point set of :data:`kernels.algorithms.winograd.POINT_SETS`.
    """

    family = "winograd"
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    sources = (SOURCE,)
    caches_weights = True  # U = G g G^T, once per weight tensor
    documented_refusals = (*GpuKernel.documented_refusals, algorithm.GEOMETRY_REFUSAL)
    uses_tf32 = False  # tf32 problems are computed strictly (see the module docstring)
    tile = 4

    def __init__(self, runtime: Any = None, workspace_cap: int | None = None,
                 points: str | None = None) -> None:
        if workspace_cap is None:
            super().__init__(runtime)
        else:
            super().__init__(runtime, workspace_cap)
        self.transforms = algorithm.tile_transforms(self.tile, points)

    def problem_reason(self, p: ConvProblem) -> str | None:
        return super().problem_reason(p) or algorithm.supports_tile(p, self.transforms.label)

    def error_model(self, p: ConvProblem) -> ErrorModel:
        """Winograd's family with this tile's transforms (operands are never rounded)."""
        tf = self.transforms
        return ErrorModel(self.family, 0.0, transforms=(tf.a_t, tf.g, tf.b_t))

    def precision(self, p: ConvProblem) -> dict[str, str]:
        work = stage_dtype(p)
        return {"storage": p.dtype, "filter_transform": f"float64, rounded once to {work}",
                "input_transform": f"{work}, V stored as {work}",
                "gemm": GEMM_DESCRIPTION[gemm_compute("fp32", work)] + f", M stored as {work}",
                "output_transform": work}

    def math_note(self, p: ConvProblem) -> str:
        note = "GEMM " + GEMM_DESCRIPTION[gemm_compute("fp32", stage_dtype(p))]
        return note + (", transforms and GEMM in fp32" if p.dtype == "float16" else "")

    def plan(self, p: ConvProblem) -> tuple[int, int, int]:
        """(images, tile rows, tile columns) per block of tiles."""
        return algorithm.plan_tile_blocks(p, self.tile, self.workspace_cap,
                                          self.work_itemsize(p))

    def workspace_bytes(self, p: ConvProblem) -> int:
        return algorithm.tiles_workspace_bytes(p, self.tile, self.plan(p), self.work_itemsize(p))

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[..., Any]:
        rt = self.runtime
        xp = rt.xp
        m, alpha = self.tile, self.transforms.alpha
        a2 = alpha * alpha
        work = stage_dtype(p)
        uv = m_dtype = work
        compute = gemm_compute("fp32", work)  # strict: never TF32 or fp16 operands
        a_t, _, b_t = self.transforms.matrices(np.dtype(work))
        at_d, bt_d = rt.asarray(np.ascontiguousarray(a_t)), rt.asarray(np.ascontiguousarray(b_t))
        u = algorithm.tiles_filter_transform(rt.asarray(w).astype(uv), p.g, self.transforms.g,
                                             xp=xp)
        xd, _, bd, y, has_bias = self.device_operands(p, x, None, bias)
        g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
        nb, rows, cols = self.plan(p)
        tile_rows, _ = algorithm.tile_grid_of(p, m)
        v_flat = xp.empty(a2 * p.ic * nb * rows * cols, dtype=uv)
        m_flat = xp.empty(a2 * p.oc * nb * rows * cols, dtype=m_dtype)
        u_mat = u.reshape(a2 * g, kg, cg)
        name_in = self.kernel("winograd_tiles_input", p)
        name_out = self.kernel("winograd_tiles_output", p)
        steps = []
        for n0 in range(0, p.mb, nb):
            count = min(nb, p.mb - n0)
            for tr0 in range(0, tile_rows, rows):
                n_rows = min(rows, tile_rows - tr0)
                tiles = count * n_rows * cols
                v = v_flat[:a2 * p.ic * tiles].reshape(a2 * g, cg, tiles)
                mm = m_flat[:a2 * p.oc * tiles].reshape(a2 * g, kg, tiles)
                args_in = [v, bt_d, m, alpha, p.ic, p.ih, p.iw, n0, count, tr0, n_rows, cols,
                           p.ph, p.pw]
                args_out = [mm, at_d, bd, y, m, alpha, p.oc, p.oh, p.ow, n0, count, tr0, n_rows,
                            cols, int(has_bias)]
                steps.append((v, mm, args_in, elementwise_grid(p.ic * tiles), args_out,
                              elementwise_grid(p.oc * tiles)))

        def run(x: Any = xd) -> Any:
            for v, mm, args_in, grid_in, args_out, grid_out in steps:
                rt.launch(SOURCE, name_in, *grid_in, [x, *args_in])
                rt.matmul(u_mat, v, mm, compute)
                rt.launch(SOURCE, name_out, *grid_out, args_out)
            return y

        return self.with_details(p, run, blocks=len(steps), tile=self.transforms.label,
                                 points=self.transforms.name)


class GpuWinograd4x4Kernel(GpuWinogradTileKernel):
    """Winograd F(4x4,3x3) on the GPU (Lavin & Gray's points)."""

    name = "winograd_4x4"
    tile = 4


class GpuWinograd6x6Kernel(GpuWinogradTileKernel):
    """Winograd F(6x6,3x3) on the GPU (convbench's points by default)."""

    name = "winograd_6x6"
    tile = 6


assert max(alpha for alpha in (GpuWinograd4x4Kernel.tile + 2, GpuWinograd6x6Kernel.tile + 2)) \
    <= MAX_ALPHA
KERNELS = [GpuWinograd4x4Kernel(), GpuWinograd6x6Kernel()]
