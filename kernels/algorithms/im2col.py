"""im2col + GEMM: lower the input to a matrix, then one GEMM (Chellapilla et al., 2006).

The lowered matrix of a tile of images ``n0:n0+nb`` and output rows
``p0:p0+rows`` has the layout both backends write and their GEMMs consume::

    col[b, (c*R + r)*S + s, p*Q + q] = x_padded[n0+b, c, (p0+p)*sh + r*dh, q*sw + s*dw]

Because input channel ``c = g*C/g + c'``, the rows of one group are contiguous,
so ``col`` viewed as ``(nb, G, C/g*R*S, rows*Q)`` times the weights
``(G, K/g, C/g*R*S)`` is one batched GEMM whose output *is* the NCHW output
block ``y[n0:n0+nb].reshape(nb, G, K/g, P*Q)[..., p0*Q:(p0+rows)*Q]``. A 1x1,
stride-1, unpadded convolution is already a GEMM and needs no lowering.
"""

from __future__ import annotations

from convbench.problem import ConvProblem

from .tiling import plan_tiles


def is_pointwise_gemm(p: ConvProblem) -> bool:
    """1x1, stride 1, no padding: the input already is the GEMM operand."""
    return (p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.oh, p.ow) == (1, 1, 1, 1, 0, 0, p.ih, p.iw)


def lowered_row_bytes(p: ConvProblem, itemsize: int) -> int:
    """Bytes of the lowered matrix for one output row of one image: ``C*R*S*Q``."""
    return p.ic * p.kh * p.kw * p.ow * itemsize


def plan_lowering(p: ConvProblem, cap: int, itemsize: int | None = None) -> tuple[int, int]:
    """Images and output rows per tile whose lowered matrix fits ``cap`` bytes."""
    return plan_tiles(p.mb, p.oh, lowered_row_bytes(p, itemsize or p.itemsize), cap)


def lowered_bytes(p: ConvProblem, images: int, rows: int, itemsize: int | None = None) -> int:
    """Bytes of the lowered matrix of a tile of ``images`` x ``rows`` output rows."""
    return images * rows * lowered_row_bytes(p, itemsize or p.itemsize)
