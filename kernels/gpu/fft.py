"""FFT convolution on the GPU: overlap-save tiles, cuFFT, strided-batched complex GEMM.

The plan (FFT lengths with small prime factors, outputs per tile, tiles per
batch under the workspace cap) and the filter spectra
``conj(rfft2(dilated w)) / (L_h L_w)`` (computed once per weight tensor, in
float64, rounded once) are :mod:`kernels.algorithms.fft`'s. Per batch of
tiles:

1. ``fft_gather_tiles`` (CUDA) copies zero-padded input tiles;
2. cuFFT's real 2-D FFT writes their spectra *frequency-major*, ``X (F, nb, C)``
   (an advanced-layout plan: no transpose);
3. one strided-batched complex GEMM over the F frequencies,
   ``Y[f] (nb, K) = X[f] (nb, C) @ W[f] (C, K)`` (with groups: per group, after
   a transpose);
4. the unnormalized inverse real FFT (the ``1/(L_h L_w)`` is in the filter
   spectra: no scaling pass);
5. ``fft_scatter_outputs`` (CUDA) keeps every stride-th valid value and adds the bias.

Precision: float32 and float16 data are transformed in float32 (float16
spectra would overflow: a spectrum value is a sum of ``L_h L_w`` inputs); the
contraction is strict float32, or TF32 on the tensor cores in the ``tf32``
mode and for float16 data, whose operands carry fewer bits than TF32 keeps.
float64 is float64 throughout. FFT lengths are at least 2 (cuFFT plans no
length-1 transforms worth having).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convbench.contract import TF32_UNIT_ROUNDOFF, ErrorModel
from convbench.problem import ConvProblem

from ..algorithms import fft as algorithm
from ..algorithms.fft import COMPLEX, FftPlan, filter_spectra, plan_fft
from . import backward
from .base import WORK_DTYPE, GpuKernel
from .gemm import GEMM_DESCRIPTION
from .runtime import Int64, row_grid
from .sources import CudaSource

SOURCE = CudaSource("fft", ("fft_gather_tiles", "fft_scatter_outputs"))
#: Shortest FFT length the GPU plans use.
MIN_FFT_LENGTH = 2


def contraction_compute(p: ConvProblem) -> str:
    """Compute precision of the spectra contraction: complex64 operands for fp32/fp16 data."""
    if p.dtype == "float64":
        return "fp64"
    return "tf32" if p.math in ("tf32", "fp16") else "fp32"


class GpuFftKernel(GpuKernel):
    """FFT (overlap-save) convolution with cuFFT; every parameter combination."""

    name = "fft"
    family = "fft"
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")
    takes_input_at_call = True  # run(x=x): a plan passes each new input
    sources = (SOURCE,)
    caches_weights = True  # filter spectra, once per weight tensor
    uses_tf32 = True

    def precision(self, p: ConvProblem) -> dict[str, str]:
        work = np.dtype(WORK_DTYPE[p.dtype]).name
        return {"storage": p.dtype, "tiles": work,
                "fft": f"{work} (cuFFT), spectra {np.dtype(COMPLEX[np.dtype(work)]).name}",
                "filter_spectra": "float64, rounded once",
                "contraction": "complex " + GEMM_DESCRIPTION[contraction_compute(p)],
                "inverse_fft": work}

    def math_note(self, p: ConvProblem) -> str:
        work = np.dtype(WORK_DTYPE[p.dtype]).name
        return (f"FFTs in {work}, contraction "
                + GEMM_DESCRIPTION[contraction_compute(p)])

    def plan(self, p: ConvProblem) -> FftPlan:
        if p.dir != "fwd":
            return algorithm.plan_fft_backward(p, self.workspace_cap, self.work_itemsize(p),
                                               MIN_FFT_LENGTH)
        return plan_fft(p, self.workspace_cap, self.work_itemsize(p), MIN_FFT_LENGTH)

    def workspace_bytes(self, p: ConvProblem) -> int:
        if p.dir != "fwd":
            return backward.workspace_bytes(self, p)
        return algorithm.workspace_bytes(p, self.plan(p), self.work_itemsize(p))

    def error_model(self, p: ConvProblem) -> ErrorModel:
        """The FFT family at the plan's size; TF32 operands where the contraction runs in TF32."""
        plan = self.plan(p)
        rounding = TF32_UNIT_ROUNDOFF if contraction_compute(p) == "tf32" else 0.0
        return ErrorModel(self.family, rounding, plan.lh * plan.lw)

    def prepare_call(self, p: ConvProblem, x: Any, w: Any, bias: Any) -> Callable[..., Any]:
        if p.dir != "fwd":
            return backward.prepare_fft(self, p, x, w, contraction_compute(p))
        rt = self.runtime
        xp = rt.xp
        work = np.dtype(WORK_DTYPE[p.dtype])
        cplx = COMPLEX[work]
        compute = contraction_compute(p)
        plan = self.plan(p)
        w_host = w.get() if hasattr(w, "get") else np.asarray(w)
        spectra = rt.asarray(filter_spectra(w_host, p, plan, work,
                                            scale=1.0 / (plan.lh * plan.lw)))
        xd, _, bd, y, has_bias = self.device_operands(p, x, None, bias)
        g, cg, kg = p.g, p.ic // p.g, p.oc // p.g
        freqs = plan.freqs
        total = p.mb * plan.tiles
        step_h, step_w = plan.th * p.sh, plan.tw * p.sw
        tiles_buf = xp.empty(plan.batch * p.ic * plan.lh * plan.lw, dtype=work)
        out_buf = xp.empty(plan.batch * p.oc * plan.lh * plan.lw, dtype=work)
        x_spec_buf = xp.empty(freqs * plan.batch * p.ic, dtype=cplx)
        y_spec_buf = xp.empty(freqs * plan.batch * p.oc, dtype=cplx)
        if g > 1:  # group-major copies of both spectra
            xg_buf = xp.empty_like(x_spec_buf)
            yg_buf = xp.empty_like(y_spec_buf)
            w_spec = spectra.reshape(freqs * g, cg, kg)
        else:
            w_spec = spectra.reshape(freqs, cg, kg)
        gather, scatter = self.kernel("fft_gather_tiles", p), self.kernel("fft_scatter_outputs", p)
        steps = []
        for t0 in range(0, total, plan.batch):
            nb = min(plan.batch, total - t0)
            tiles = tiles_buf[:nb * p.ic * plan.lh * plan.lw].reshape(nb * p.ic, plan.lh,
                                                                       plan.lw)
            out = out_buf[:nb * p.oc * plan.lh * plan.lw].reshape(nb * p.oc, plan.lh, plan.lw)
            x_spec = x_spec_buf[:freqs * nb * p.ic].reshape(freqs, nb * p.ic)
            y_spec = y_spec_buf[:freqs * nb * p.oc].reshape(freqs, nb * p.oc)
            args_gather = [tiles, nb, p.ic, p.ih, p.iw, Int64(t0), plan.tile_rows,
                           plan.tile_cols, plan.lh, plan.lw, step_h, step_w, p.ph, p.pw]
            args_scatter = [out, bd, y, nb, p.oc, p.oh, p.ow, Int64(t0), plan.tile_rows,
                            plan.tile_cols, plan.lh, plan.lw, plan.th, plan.tw, p.sh, p.sw,
                            int(has_bias)]
            steps.append((nb, tiles, out, x_spec, y_spec, args_gather,
                          row_grid(nb * p.ic, plan.lh * plan.lw), args_scatter,
                          row_grid(nb * p.oc, plan.th * plan.tw)))

        def contract(nb: int, x_spec: Any, y_spec: Any) -> None:
            if g == 1:
                rt.matmul(x_spec.reshape(freqs, nb, cg), w_spec, y_spec.reshape(freqs, nb, kg),
                          compute)
                return
            # (F, nb, G, C/g) -> (F, G, nb, C/g): one GEMM per (frequency, group)
            xg = xg_buf[:x_spec.size].reshape(freqs, g, nb, cg)
            xg[...] = x_spec.reshape(freqs, nb, g, cg).transpose(0, 2, 1, 3)
            yg = yg_buf[:y_spec.size].reshape(freqs, g, nb, kg)
            rt.matmul(xg.reshape(freqs * g, nb, cg), w_spec, yg.reshape(freqs * g, nb, kg),
                      compute)
            y_spec.reshape(freqs, nb, g, kg)[...] = yg.transpose(0, 2, 1, 3)

        def run(x: Any = xd) -> Any:
            for (nb, tiles, out, x_spec, y_spec, args_gather, grid_gather, args_scatter,
                 grid_scatter) in steps:
                rt.launch(SOURCE, gather, *grid_gather, [x, *args_gather])
                rt.rfft2_by_frequency(tiles, x_spec)
                contract(nb, x_spec, y_spec)
                rt.irfft2_by_frequency(y_spec, out)
                rt.launch(SOURCE, scatter, *grid_scatter, args_scatter)
            return y

        return self.with_details(p, run, fft_shape=[plan.lh, plan.lw], batches=len(steps))


KERNELS = [GpuFftKernel()]
