"""Direct (sliding-window) convolution: the definition, and the input window of an output tile.

    y[n, k, p, q] = b[k] + sum over c, r, s of
                    w[k, c, r, s] * x_padded[n, g*C/g + c, p*sh + r*dh, q*sw + s*dw]

with ``g = k // (K/g)``. Both backends block this loop nest; a block of
``rows x cols`` outputs reads the input window :func:`input_window` gives.

The backward directions are the same sum read from the other operand:

* **bwd_d** is a *gather*: each ``dx`` element sums the ``dy`` values whose
  window covered it, so one thread owns each ``dx`` element and no scatter
  (no atomic add) is needed::

      dx[n, c, h, w] = sum over k in c's group, and taps (r, s) with
                       h + pt - r*dh = p*sh, w + pl - s*dw = q*sw
                       (0 <= p < P, 0 <= q < Q) of w[k, c', r, s] * dy[n, k, p, q]

  For a fixed tap the columns that receive a contribution step by ``sw``:
  ``w = q*sw + s*dw - pl`` for ``q`` in :func:`reaching_outputs`, the
  forward's own index ranges, so the loop visits only the taps that reach a
  pixel (``ceil(R/sh)`` rows of taps at most, without dilation).
* **bwd_w** is a reduction over ``N``, ``P`` and ``Q``::

      dw[k, c', r, s] = sum over n, p, q of dy[n, k, p, q] *
                        x_padded[n, g*C/g + c', p*sh + r*dh, q*sw + s*dw]

* **bwd_wb** adds ``db[k] = sum over n, p, q of dy[n, k, p, q]``.
"""

from __future__ import annotations

from convbench.problem import ConvProblem, effective_extent


def input_window(p: ConvProblem, rows: int, cols: int) -> tuple[int, int]:
    """Rows and columns of (padded) input that ``rows x cols`` adjacent outputs read."""
    return ((rows - 1) * p.sh + effective_extent(p.kh, p.dil_h),
            (cols - 1) * p.sw + effective_extent(p.kw, p.dil_w))


def reaching_outputs(offset: int, stride: int, width: int, out_width: int) -> tuple[int, int]:
    """Outputs ``q`` in ``[lo, hi)`` whose tap at ``offset`` lands in ``0 <= q*stride + offset
    < width``: the forward's valid window, and in bwd_d the ``dy`` columns a tap gathers."""
    lo = max(0, (-offset + stride - 1) // stride)
    hi = min(out_width, (width - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


def output_row_of(p: ConvProblem, h: int, r: int) -> int | None:
    """The output row whose tap ``r`` reads input row ``h``, or None (bwd_d's gather)."""
    num = h + p.ph - r * p.dil_h
    if num < 0 or num % p.sh:
        return None
    row = num // p.sh
    return row if row < p.oh else None
