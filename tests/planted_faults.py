"""Real bugs, planted through the kernel protocol, that the accuracy checks must catch.

Each fault is a kernel with the *same name* as the built-in it corrupts, so
``convbench check`` compares it against the built-in's baseline. Loaded in
subprocesses through ``CONVBENCH_KERNEL_MODULES=planted_faults`` (which may
replace built-ins because of ``REPLACES_BUILTINS``) or registered in-process
with ``convbench.register(..., replace=True)``.
"""

from dataclasses import replace

from convbench.kernels.algorithms.winograd import G
from convbench.kernels.cpu.direct import DirectKernel
from convbench.kernels.cpu.fft import FftKernel
from convbench.kernels.cpu.im2col import Im2colKernel
from convbench.kernels.cpu.winograd import WinogradKernel
from convbench.kernels.cpu.winograd_tiles import Winograd4x4Kernel, Winograd6x6Kernel
from convbench.problem import effective_extent

REPLACES_BUILTINS = True


class WinogradPerturbedCoefficient(WinogradKernel):
    """G[1, 0] = 1/2 * (1 + 1e-3): one transform coefficient off by 1e-3 relative."""

    fault = "winograd transform coefficient perturbed by 1e-3 relative"
    filter_matrix = G.copy()
    filter_matrix[1, 0] *= 1 + 1e-3


class _WrongTransformCoefficient:
    """One entry of ``B^T`` off by ``relative``: a mistyped constant in the input transform."""

    entry = (1, 2)
    relative = 1e-3

    def matrices(self, dtype):
        a_t, g, b_t = super().matrices(dtype)
        b_t = b_t.copy()
        b_t[self.entry] *= 1 + self.relative
        return a_t, g, b_t


class Winograd4x4WrongCoefficient(_WrongTransformCoefficient, Winograd4x4Kernel):
    """F(4x4,3x3) with B^T[1, 2] = -4 (1 + 1e-3)."""

    fault = "winograd_4x4 input transform coefficient B^T[1, 2] off by 1e-3 relative"


class Winograd6x6WrongCoefficient(_WrongTransformCoefficient, Winograd6x6Kernel):
    """F(6x6,3x3) with B^T[1, 3] = 4.25 (1 + 1e-3): 4.254 typed for 17/4."""

    entry = (1, 3)
    fault = "winograd_6x6 input transform coefficient B^T[1, 3] off by 1e-3 relative"


class Im2colBottomBorderOffByOne(Im2colKernel):
    """The lowering believes the image is one row shorter: its bottom padding starts a row early."""

    fault = "im2col padding off by one at the bottom border"

    def prepare_call(self, p, x, w, bias):
        return super().prepare_call(p, x[:, :, :-1, :], w, bias)


class FftOneTooSmall(FftKernel):
    """FFT length one less than a tile needs, so the circular correlation wraps round."""

    fault = "FFT size one too small (circular wrap-around)"

    def plan(self, p):
        plan = super().plan(p)
        needed = (plan.th - 1) * p.sh + effective_extent(p.kh, p.dil_h)
        return replace(plan, lh=needed - 1)


class Im2colDroppedBias(Im2colKernel):
    """Forgets to add the bias."""

    fault = "dropped bias"

    def prepare_call(self, p, x, w, bias):
        return super().prepare_call(p, x, w, None)


class DirectSkipsLastChannel(DirectKernel):
    """The channel loop stops one short: the last input channel of each group is skipped."""

    fault = "direct kernel skips the last input channel"

    def prepare_call(self, p, x, w, bias):
        skipped = w.copy()
        skipped[:, -1] = 0  # what a loop over channels 0..C/g-2 computes, for any groups
        return super().prepare_call(p, x, skipped, bias)


class DirectBackwardDataSkipsLastOutputChannel(DirectKernel):
    """bwd_d's gather stops one output channel short: the last K/g channel of dy is lost.

    Every other direction is the built-in's.
    """

    fault = "direct bwd_d skips the last output channel of each group"

    def prepare_call(self, p, x, w, bias):
        if p.dir == "bwd_d":
            w = w.copy()
            kg = p.oc // p.g
            w.reshape(p.g, kg, *w.shape[1:])[:, -1] = 0  # what a loop to K/g - 1 computes
        return super().prepare_call(p, x, w, bias)


class Im2colBackwardWeightsSkipsLastRow(Im2colKernel):
    """bwd_w's reduction over output rows stops one short (the last row of every image).

    Every other direction is the built-in's.
    """

    fault = "im2col bwd_w reduction skips the last output row"

    def prepare_call(self, p, x, w, bias):
        if p.dir in ("bwd_w", "bwd_wb"):
            w = w.copy()  # w is dy in bwd_w
            w[:, :, -1] = 0
        return super().prepare_call(p, x, w, bias)


class DirectBiasGradientSkipsLastImage(DirectKernel):
    """bwd_wb's db sums every image but the last (dw is right)."""

    fault = "direct bwd_wb bias gradient skips the last image"

    def prepare_call(self, p, x, w, bias):
        run = super().prepare_call(p, x, w, bias)
        if p.dir != "bwd_wb":
            return run

        def wrong_db(*args):
            dw, db = run(*args)
            dy = args[1] if len(args) > 1 else w
            db[...] = dy[:-1].sum(axis=(0, 2, 3)) if p.mb > 1 else 0
            return dw, db

        return wrong_db


FAULTS = [WinogradPerturbedCoefficient(), Im2colBottomBorderOffByOne(), FftOneTooSmall(),
          Im2colDroppedBias(), DirectSkipsLastChannel(), Winograd4x4WrongCoefficient(),
          Winograd6x6WrongCoefficient()]
#: One planted fault per backward direction: direction -> fault.
BACKWARD_FAULTS = {"bwd_d": DirectBackwardDataSkipsLastOutputChannel(),
                   "bwd_w": Im2colBackwardWeightsSkipsLastRow(),
                   "bwd_wb": DirectBiasGradientSkipsLastImage()}
#: What a subprocess registers: one fault per built-in name (dropped bias has its own run).
KERNELS = [WinogradPerturbedCoefficient(), Im2colBottomBorderOffByOne(), FftOneTooSmall(),
           DirectSkipsLastChannel(), Winograd4x4WrongCoefficient(), Winograd6x6WrongCoefficient()]
