"""Direct (sliding-window) convolution: the definition, and the input window of an output tile.

    y[n, k, p, q] = b[k] + sum over c, r, s of
                    w[k, c, r, s] * x_padded[n, g*C/g + c, p*sh + r*dh, q*sw + s*dw]

with ``g = k // (K/g)``. Both backends block this loop nest; a block of
``rows x cols`` outputs reads the input window :func:`input_window` gives.
"""

from __future__ import annotations

from convbench.problem import ConvProblem, effective_extent


def input_window(p: ConvProblem, rows: int, cols: int) -> tuple[int, int]:
    """Rows and columns of (padded) input that ``rows x cols`` adjacent outputs read."""
    return ((rows - 1) * p.sh + effective_extent(p.kh, p.dil_h),
            (cols - 1) * p.sw + effective_extent(p.kw, p.dil_w))
