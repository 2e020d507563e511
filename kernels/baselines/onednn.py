"""oneDNN through PyTorch: ``torch.nn.functional.conv2d`` on the CPU.

PyTorch's CPU convolution dispatches to oneDNN (mkldnn) for float32; the
thread count is the harness's (``torch.set_num_threads``). Skipped with an
install hint when torch is absent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convbench.contract import KernelBase
from convbench.problem import ConvProblem

INSTALL_HINT = "torch is not installed: pip install 'convbench[compare]' (torch==2.13.0, CPU)"


def _torch() -> Any:
    try:
        import torch  # noqa: PLC0415 -- optional dependency
    except ImportError:
        return None
    return torch


def torch_padding(p: ConvProblem) -> tuple[Any, tuple[int, int, int, int] | None]:
    """PyTorch ``padding`` for ``p``, plus an explicit pre-pad when it is asymmetric.

    Returns ``(padding, pre_pad)``: ``pre_pad`` is ``(left, right, top, bottom)``
    for ``torch.nn.functional.pad`` (done once in ``prepare``), else ``None``.
    """
    (pt, pb), (pl, pr) = p.padding
    if pt == pb and pl == pr:
        return (pt, pl), None
    # Bottom/right padding the stride never reads is equivalent to the top/left one.
    if p.natural_oh == p.oh and p.natural_ow == p.ow:
        return (p.ph, p.pw), None
    return 0, (pl, pr, pt, pb)


class OneDnnBaseline(KernelBase):
    """``torch.nn.functional.conv2d`` on the CPU (oneDNN), strict float32 or float64.

    ``workspace_bytes`` is 0: oneDNN's scratchpad is not observable from Python.
    """

    name = "onednn"
    family = "direct"
    kind = "baseline"

    dtypes = ("float32", "float64")

    def supports(self, p: ConvProblem) -> str | None:
        return INSTALL_HINT if _torch() is None else super().supports(p)

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[[], Any]:
        torch = _torch()
        f = torch.nn.functional
        padding, pre_pad = torch_padding(p)
        xt = torch.from_numpy(x)
        if pre_pad is not None:
            # Negative amounts crop rows the output never reads.
            xt = f.pad(xt, pre_pad)
        wt = torch.from_numpy(w)
        bt = None if bias is None else torch.from_numpy(bias)

        def run() -> Any:
            with torch.no_grad():
                return f.conv2d(xt, wt, bt, stride=p.stride, padding=padding,
                                dilation=p.dilation, groups=p.g)

        return run


KERNELS = [OneDnnBaseline()]
