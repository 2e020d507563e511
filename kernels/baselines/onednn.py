"""oneDNN through PyTorch: ``torch.nn.functional.conv2d`` and its gradients on the CPU.

PyTorch's CPU convolution dispatches to oneDNN (mkldnn) for float32; the
thread count is the harness's (``torch.set_num_threads``). Skipped with an
install hint when torch is absent.

The backward directions call aten's ``convolution_backward`` (what
``torch.nn.grad.conv2d_input`` and ``conv2d_weight`` call) with the output
mask of the direction, so that only the gradients asked for are computed.
Which of torch's convolution backends ran (``Mkldnn`` is oneDNN; float64
takes ``Slow2d``, torch's own im2col) is recorded in the call's details as
``torch_backend``, in every direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convbench.contract import KernelBase, Prepared
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


def torch_backend(torch: Any, p: ConvProblem, x: Any, w: Any, bias: Any,
                  padding: Any) -> str:
    """The convolution backend torch selects for these operands (``Mkldnn`` is oneDNN)."""
    try:
        chosen = torch._C._select_conv_backend(
            x, w, bias, list(p.stride), list(padding) if not isinstance(padding, int)
            else [padding, padding], list(p.dilation), False, [0, 0], p.g, None)
    except (AttributeError, RuntimeError, TypeError):  # private API: may move
        return "unknown"
    return str(chosen).rpartition(".")[2]


class OneDnnBaseline(KernelBase):
    """``torch.nn.functional.conv2d`` on the CPU (oneDNN), strict float32 or float64.

    ``workspace_bytes`` is 0: oneDNN's scratchpad is not observable from Python.
    """

    name = "onednn"
    family = "direct"
    kind = "baseline"
    directions = ("fwd", "bwd_d", "bwd_w", "bwd_wb")

    dtypes = ("float32", "float64")

    def supports(self, p: ConvProblem) -> str | None:
        return INSTALL_HINT if _torch() is None else super().supports(p)

    def prepare_call(self, p: ConvProblem, x: np.ndarray, w: np.ndarray,
                     bias: np.ndarray | None) -> Callable[[], Any]:
        if p.dir != "fwd":
            return self._prepare_backward(p, x, w)
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

        return Prepared(run, {"torch_backend": torch_backend(torch, p, xt, wt, bt, padding)})

    def _prepare_backward(self, p: ConvProblem, a: np.ndarray, b: np.ndarray) -> Prepared:
        """bwd_d from ``(dy, w)``; bwd_w and bwd_wb from ``(x, dy)``: aten's
        ``convolution_backward`` with the direction's output mask."""
        torch = _torch()
        f = torch.nn.functional
        padding, pre_pad = torch_padding(p)
        (pt, pb), (pl, pr) = p.padding
        padded_shape = (p.mb, p.ic, p.padded_height, p.padded_width)
        if p.dir == "bwd_d":
            dy, w = torch.from_numpy(a), torch.from_numpy(b)
            # Only its shape is read for dx; allocated here, not in the timed call.
            x = torch.zeros(padded_shape if pre_pad else p.input_shape, dtype=w.dtype)
            mask = [True, False, False]
        else:
            x, dy = torch.from_numpy(a), torch.from_numpy(b)
            if pre_pad is not None:
                x = f.pad(x, pre_pad)  # negative amounts crop rows no window reads
            w = torch.zeros(p.weight_shape, dtype=x.dtype)
            mask = [False, True, p.dir == "bwd_wb"]
        pad = list(padding) if pre_pad is None else [0, 0]
        args = (list(p.stride), pad, list(p.dilation), False, [0, 0], p.g, mask)
        bias_sizes = [p.oc] if mask[2] else None
        backend = torch_backend(torch, p, x, w, None, tuple(pad))

        def run() -> Any:
            with torch.no_grad():
                dx, dw, db = torch.ops.aten.convolution_backward(dy, x, w, bias_sizes, *args)
            if p.dir == "bwd_d":
                # The padded input's gradient, its padding cropped off (and zeros for
                # trailing rows no window read).
                return dx if pre_pad is None else f.pad(dx, (-pl, -pr, -pt, -pb))
            return (dw, db) if p.dir == "bwd_wb" else dw

        return Prepared(run, {"torch_backend": backend})


KERNELS = [OneDnnBaseline()]
