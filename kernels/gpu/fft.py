"""FFT convolution on the GPU: overlap-save tiles, cuFFT, batched complex GEMM.

The plan (FFT lengths with small prime factors, outputs per tile, tiles per
batch under the workspace cap), the filter spectra ``conj(rfft2(dilated w))``
(computed once per weight tensor, in float64, rounded once) and the tile
layouts are :mod:`kernels.algorithms.fft`'s. Per batch of tiles:
``fft_gather_tiles`` (CUDA) copies zero-padded input tiles, cuFFT takes their
real 2-D FFTs (plans cached per shape), one batched complex GEMM per
(frequency, group) contracts input channels, the inverse real FFT returns to
space, and ``fft_scatter_outputs`` (CUDA) keeps every stride-th valid value
and adds the bias. float16 data is transformed in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from convbench.contract import ErrorModel
from convbench.problem import ConvProblem

from ..algorithms import fft as algorithm
from ..algorithms.fft import FftPlan, filter_spectra, plan_fft
from .base import WORK_DTYPE, GpuKernel
from .runtime import Int64, elementwise_grid
from .sources import CudaSource

SOURCE = CudaSource("fft", ("fft_gather_tiles", "fft_scatter_outputs"))


class GpuFftKernel(GpuKernel):
    """FFT (overlap-save) convolution with cuFFT; every parameter combination."""

    name = "fft"
    family = "fft"
    sources = (SOURCE,)
    caches_weights = True  # filter spectra, once per weight tensor

    def math_mode(self, p: ConvProblem) -> str:
        if p.dtype == "float16":
            return "fp16 storage, FFTs and GEMMs in fp32"
        return super().math_mode(p)

    def plan(self, p: ConvProblem) -> FftPlan:
        return plan_fft(p, self.workspace_cap, self.work_itemsize(p))

    def workspace_bytes(self, p: ConvProblem) -> int:
        return algorithm.workspace_bytes(p, self.plan(p), self.work_itemsize(p))

    def error_model(self, p: ConvProblem) -> ErrorModel:
        plan = self.plan(p)
        return replace(super().error_model(p), transform_size=plan.lh * plan.lw)

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[[], Any]:
        rt = self.runtime
        xp = rt.xp
        work = WORK_DTYPE[p.dtype]
        plan = self.plan(p)
        w_host = w.get() if hasattr(w, "get") else np.asarray(w)
        spectra = rt.asarray(filter_spectra(w_host, p, plan, work))
        xd, _, bd, y, has_bias = self.device_operands(p, x, None, bias)
        g, cg = p.g, p.ic // p.g
        total = p.mb * plan.tiles
        step_h, step_w = plan.th * p.sh, plan.tw * p.sw
        half = plan.lw // 2 + 1
        tiles_buf = xp.empty(plan.batch * p.ic * plan.lh * plan.lw, dtype=work)
        gather, scatter = self.kernel("fft_gather_tiles", p), self.kernel("fft_scatter_outputs", p)
        steps = []
        for t0 in range(0, total, plan.batch):
            nb = min(plan.batch, total - t0)
            tiles = tiles_buf[:nb * p.ic * plan.lh * plan.lw].reshape(nb, p.ic, plan.lh, plan.lw)
            args_gather = [xd, tiles, nb, p.ic, p.ih, p.iw, Int64(t0), plan.tile_rows,
                           plan.tile_cols, plan.lh, plan.lw, step_h, step_w, p.ph, p.pw]
            steps.append((nb, tiles, args_gather,
                          elementwise_grid(nb * p.ic * plan.lh * plan.lw), Int64(t0),
                          elementwise_grid(nb * p.oc * plan.th * plan.tw)))

        def run() -> Any:
            for nb, tiles, args_gather, grid_gather, t0, grid_scatter in steps:
                rt.launch(SOURCE, gather, *grid_gather, args_gather)
                spec = rt.rfft2(tiles)
                # (nb, G, C/g, F) -> (F, G, nb, C/g): each (frequency, group) is one GEMM
                xt = xp.ascontiguousarray(
                    spec.reshape(nb, g, cg, plan.freqs).transpose(3, 1, 0, 2))
                yt = xp.matmul(xt, spectra)  # (F, G, nb, K/g)
                ys = xp.ascontiguousarray(yt.transpose(2, 1, 3, 0))  # (nb, G, K/g, F)
                out = rt.irfft2(ys.reshape(nb, p.oc, plan.lh, half), (plan.lh, plan.lw))
                out = xp.ascontiguousarray(out, dtype=work)
                rt.launch(SOURCE, scatter, *grid_scatter,
                          [out, bd, y, nb, p.oc, p.oh, p.ow, t0, plan.tile_rows,
                           plan.tile_cols, plan.lh, plan.lw, plan.th, plan.tw, p.sh, p.sw,
                           int(has_bias)])
            return y

        return run


KERNELS = [GpuFftKernel()]
