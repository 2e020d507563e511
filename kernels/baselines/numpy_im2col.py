"""The textbook NumPy im2col + ``np.dot`` (as taught in CS231n-style courses).

Pad with ``np.pad``, gather every receptive field with one fancy-indexing
expression, multiply by the reshaped filters, reshape back. Everything is
redone on each call, as in the teaching code; it shows how far the compiled
kernels are from the classroom version.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convbench.contract import KernelBase
from convbench.problem import ConvProblem

from ..cpu.base import CappedWorkspace


def im2col_indices(p: ConvProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel, row and column index arrays of shape ``(C*R*S, P*Q)`` into the padded input."""
    r, s = np.meshgrid(np.arange(p.kh) * p.dil_h, np.arange(p.kw) * p.dil_w, indexing="ij")
    pp, qq = np.meshgrid(np.arange(p.oh) * p.sh, np.arange(p.ow) * p.sw, indexing="ij")
    rows = r.reshape(1, -1, 1) + pp.reshape(1, 1, -1)
    cols = s.reshape(1, -1, 1) + qq.reshape(1, 1, -1)
    channels = np.arange(p.ic).reshape(-1, 1, 1)
    shape = (p.ic * p.kh * p.kw, p.oh * p.ow)
    return (np.broadcast_to(channels, (p.ic, p.kh * p.kw, 1)).reshape(-1, 1),
            np.broadcast_to(rows, (p.ic, p.kh * p.kw, p.oh * p.ow)).reshape(shape),
            np.broadcast_to(cols, (p.ic, p.kh * p.kw, p.oh * p.ow)).reshape(shape))


class NumpyIm2colBaseline(CappedWorkspace, KernelBase):
    """Textbook im2col with fancy indexing and ``np.dot``; every parameter combination.

    It does not tile (that is the point of it): a layer whose whole lowered
    matrix is over the workspace cap is refused with the bytes it would need.
    """

    name = "numpy_im2col"
    family = "direct"
    kind = "baseline"

    dtypes = ("float32", "float64")
    uses_libraries = True

    def supports(self, p: ConvProblem) -> str | None:
        return super().supports(p) or self.workspace_reason(p)

    def workspace_bytes(self, p: ConvProblem) -> int:
        """The padded input and the whole lowered matrix (a call's), the int64 index
        arrays (kept, and one image of each being built), one ``np.dot``: its product and
        the contiguous copy it makes of its operand (the gather leaves the images'
        matrices strided), and BLAS's allowance."""
        padded = p.mb * p.ic * p.padded_height * p.padded_width
        crs, taps, pq = p.ic * p.kh * p.kw, p.kh * p.kw, p.oh * p.ow
        indices = 2 * (crs + taps) * pq * 8 + crs * 8
        dot = (p.oc // p.g + crs // p.g) * pq
        return self.with_libraries((padded + p.mb * crs * pq + dot) * p.itemsize + indices)

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[[], np.ndarray]:
        (pt, pb), (pl, pr) = p.padding
        k, i, j = im2col_indices(p)
        g, kg, cg = p.g, p.oc // p.g, p.ic // p.g
        w_mat = w.reshape(g, kg, cg * p.kh * p.kw)
        crs = cg * p.kh * p.kw
        # np.pad takes no negative widths: crop unread trailing rows first.
        x_used = x[:, :, :p.ih + min(pb, 0), :p.iw + min(pr, 0)]
        widths = ((0, 0), (0, 0), (pt, max(pb, 0)), (pl, max(pr, 0)))

        def run() -> np.ndarray:
            xpad = np.pad(x_used, widths)
            cols = xpad[:, k, i, j]  # (N, C*R*S, P*Q)
            out = np.empty((p.mb, g, kg, p.oh * p.ow), dtype=x.dtype)
            for gi in range(g):
                block = cols[:, gi * crs:(gi + 1) * crs]
                for n in range(p.mb):
                    out[n, gi] = np.dot(w_mat[gi], block[n])
            y = out.reshape(p.output_shape)
            if bias is not None:
                y += bias.reshape(1, -1, 1, 1)
            return y

        return run


KERNELS = [NumpyIm2colBaseline()]
