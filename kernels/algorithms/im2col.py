"""im2col + GEMM: lower the input to a matrix, then one GEMM (Chellapilla et al., 2006).

The lowered matrix of a tile of images ``n0:n0+nb`` and output rows
``p0:p0+rows`` has the layout both backends write and their GEMMs consume::

    col[b, (c*R + r)*S + s, p*Q + q] = x_padded[n0+b, c, (p0+p)*sh + r*dh, q*sw + s*dw]

Because input channel ``c = g*C/g + c'``, the rows of one group are contiguous,
so ``col`` viewed as ``(nb, G, C/g*R*S, rows*Q)`` times the weights
``(G, K/g, C/g*R*S)`` is one batched GEMM whose output *is* the NCHW output
block ``y[n0:n0+nb].reshape(nb, G, K/g, P*Q)[..., p0*Q:(p0+rows)*Q]``. A 1x1,
stride-1, unpadded convolution is already a GEMM and needs no lowering.

The backward directions use the same lowered layout and the same tiles:

* **bwd_d**: ``col = W^T dY`` (per group, ``(C/g*R*S, K/g)`` times
  ``(K/g, rows*Q)``), then **col2im** adds each lowered element back into the
  input pixel it was copied from (the adjoint of the lowering); the sums of
  overlapping windows happen there, one ``(image, channel)`` plane per
  thread, so nothing is written twice at once;
* **bwd_w**: ``dW = dY col^T`` (per group, ``(K/g, rows*Q)`` times
  ``(rows*Q, C/g*R*S)``), summed over the tiles: the lowering of ``X`` is
  the forward's, tiled under the same workspace cap;
* a pointwise layer needs no lowering in either: ``dX = W^T dY`` and
  ``dW = sum_n dY_n X_n^T``.
"""

from __future__ import annotations

from convbench.problem import ConvProblem

from .tiling import plan_tiles


def is_pointwise_gemm(p: ConvProblem) -> bool:
    """1x1, stride 1, no padding: the input already is the GEMM operand."""
    return (p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.oh, p.ow) == (1, 1, 1, 1, 0, 0, p.ih, p.iw)


def folded_bytes(p: ConvProblem) -> int:
    """Bytes of a 1x1 layer's input and output transposed to ``(C or K, N*H*W)``."""
    return (p.ic + p.oc) * p.mb * p.oh * p.ow * p.itemsize


def lowered_row_bytes(p: ConvProblem, itemsize: int) -> int:
    """Bytes of the lowered matrix for one output row of one image: ``C*R*S*Q``."""
    return p.ic * p.kh * p.kw * p.ow * itemsize


def plan_lowering(p: ConvProblem, cap: int, itemsize: int | None = None) -> tuple[int, int]:
    """Images and output rows per tile whose lowered matrix fits ``cap`` bytes."""
    return plan_tiles(p.mb, p.oh, lowered_row_bytes(p, itemsize or p.itemsize), cap)


def lowered_bytes(p: ConvProblem, images: int, rows: int, itemsize: int | None = None) -> int:
    """Bytes of the lowered matrix of a tile of ``images`` x ``rows`` output rows."""
    return images * rows * lowered_row_bytes(p, itemsize or p.itemsize)
